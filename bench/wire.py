"""The load generator's view of the wire: just enough WebSocket and rtcore protocol to drive a
server fast. Client frames are masked with an all-zero key (valid per RFC 6455 and free to
apply); server frames are counted by walking their headers, without decoding payloads."""

from __future__ import annotations

import struct
from typing import Any

import msgpack

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(payload: bytes) -> bytes:
    """A masked binary frame with the all-zero masking key (so the payload is unchanged)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x82, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


def request(**obj: Any) -> bytes:
    return client_frame(msgpack.packb(obj))


def count_frames(data: bytes, skip: int) -> tuple[int, int, bytes]:
    """Count server frames whose header starts in ``data``.

    ``skip``: bytes of a previous frame still to come at the start of ``data``. Returns
    (frames, bytes of the last frame still to come, an incomplete header to prepend to the
    next chunk).
    """
    n = 0
    size = len(data)
    p = skip
    while p + 2 <= size:
        b = data[p + 1]
        if b < 126:
            p += 2 + b
        elif b == 126:
            if p + 4 > size:
                break
            p += 4 + ((data[p + 2] << 8) | data[p + 3])
        else:
            if p + 10 > size:
                break
            p += 10 + int.from_bytes(data[p + 2 : p + 10], "big")
        n += 1
    if p >= size:
        return n, p - size, b""
    return n, 0, data[p:]


def frames(data: bytes) -> tuple[list[bytes], bytes]:
    """Split complete server frames (payloads) from ``data``; returns them and the rest."""
    out = []
    p = 0
    size = len(data)
    while p + 2 <= size:
        b = data[p + 1]
        if b < 126:
            start, length = p + 2, b
        elif b == 126:
            if p + 4 > size:
                break
            start, length = p + 4, (data[p + 2] << 8) | data[p + 3]
        else:
            if p + 10 > size:
                break
            start, length = p + 10, int.from_bytes(data[p + 2 : p + 10], "big")
        if start + length > size:
            break
        out.append(data[start : start + length])
        p = start + length
    return out, data[p:]
