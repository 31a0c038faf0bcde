"""Test helpers shared by unit and integration tests."""

from __future__ import annotations

from typing import Any

from wsproto.frame_protocol import FrameProtocol, Opcode

from rtcore.protocol import codec


def unframe(data: bytes | memoryview) -> list[tuple[Opcode, Any]]:
    """Parse server-to-client WebSocket frames back into (opcode, payload) pairs."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(bytes(data))
    return [(fr.opcode, fr.payload) for fr in proto.received_frames()]


def frames_of(items: list[bytes | memoryview]) -> list[Any]:
    """Decode every binary frame queued in an outbox into frame objects."""
    out = []
    for opcode, payload in unframe(b"".join(bytes(i) for i in items)):
        assert opcode is Opcode.BINARY
        out.append(codec.decode(bytes(payload), allowed=codec.SERVER_TYPES))
    return out
