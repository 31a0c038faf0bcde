"""WebSocket framing of server messages, done once per message for fan-out (RFC 6455 §5.2).

Server-to-client frames are never masked, and rtcore negotiates no extensions, so the framed
bytes of a message are the same for every recipient: a publish frames its payload once and the
same ``bytes`` object is queued to every subscriber. Data frames (every message and reply)
get their header here directly -- the same bytes wsproto's frame serializer makes, at a
fraction of its cost per message; control frames (close, ping) are wsproto's.
"""

from __future__ import annotations

import struct

from wsproto.frame_protocol import CloseReason, FrameProtocol

_SERVER = FrameProtocol(client=False, extensions=[])
_FIN_BINARY = 0x82
"""FIN set, no RSV bits, opcode 2 (binary)."""
_HEADERS = tuple(bytes((_FIN_BINARY, n)) for n in range(126))
"""Every header of a payload below 126 bytes (a 7-bit length): most messages and replies."""
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def binary_frame(payload: bytes) -> bytes:
    """One complete, unmasked binary frame carrying ``payload`` (RFC 6455 §5.2: the
    shortest length encoding, as wsproto writes it)."""
    n = len(payload)
    if n < 126:
        return _HEADERS[n] + payload
    if n < 0x10000:
        return _HEADER_16(_FIN_BINARY, 126, n) + payload
    return _HEADER_64(_FIN_BINARY, 127, n) + payload


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked frame made by :func:`binary_frame` (its header skipped)."""
    size = frame[1] & 0x7F
    return frame[2 if size < 126 else 4 if size == 126 else 10 :]


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is truncated to fit a control frame by wsproto."""
    return bytes(_SERVER.close(CloseReason(code) if code < 3000 else code, reason))


def ping_frame(payload: bytes = b"") -> bytes:
    return bytes(_SERVER.ping(payload))
