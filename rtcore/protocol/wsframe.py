"""WebSocket framing of server messages, done once per message for fan-out (RFC 6455 §5.2).

Server-to-client frames are never masked, and rtcore negotiates no extensions, so the framed
bytes of a message are the same for every recipient: a publish frames its payload once and the
same ``bytes`` object is queued to every subscriber. wsproto's frame serializer does the work.
"""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason, FrameProtocol

_SERVER = FrameProtocol(client=False, extensions=[])


def binary_frame(payload: bytes) -> bytes:
    """One complete, unmasked binary frame carrying ``payload``."""
    return bytes(_SERVER.send_data(payload, fin=True))


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked frame made by :func:`binary_frame` (its header skipped)."""
    size = frame[1] & 0x7F
    return frame[2 if size < 126 else 4 if size == 126 else 10 :]


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is truncated to fit a control frame by wsproto."""
    return bytes(_SERVER.close(CloseReason(code) if code < 3000 else code, reason))


def ping_frame(payload: bytes = b"") -> bytes:
    return bytes(_SERVER.ping(payload))
