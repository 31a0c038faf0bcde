"""The load generator's view of the wire: just enough WebSocket and rtcore protocol to drive a
server fast. Client frames are masked with an all-zero key (valid per RFC 6455 and free to
apply); server frames are counted by walking their headers, without decoding payloads."""

from __future__ import annotations

import struct
from typing import Any

import msgpack


def upgrade_request(host: str, path: str = "/") -> bytes:
    """The WebSocket upgrade request for ``path`` on ``host`` (a Host header's value)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


UPGRADE = upgrade_request("127.0.0.1")
"""The upgrade request the C clients send too (csrc/*.c), for a server on 127.0.0.1."""


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked final frame (binary unless ``opcode`` says otherwise) with the all-zero
    masking key (so the payload is unchanged)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
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
    framed, rest = frames_with_opcodes(data)
    return [payload for _, payload in framed], rest


def frames_with_opcodes(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Like :func:`frames`, with each frame's opcode (1 text, 2 binary, 8 close, 9 ping,
    10 pong; the server never fragments its messages, protocol.md §1)."""
    out = []
    p = 0
    size = len(data)
    while p + 2 <= size:
        b = data[p + 1] & 0x7F
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
        out.append((data[p] & 0x0F, data[start : start + length]))
        p = start + length
    return out, data[p:]


def close_code(payload: bytes) -> int:
    """A close frame's code (1005, "no status", when it has none)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
