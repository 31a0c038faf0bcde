"""rtcore.protocol.wsframe: data frames are framed by hand (once per message and reply), and
must be byte for byte what wsproto's frame serializer makes (RFC 6455 §5.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from rtcore.protocol import wsframe


def wsproto_frame(payload: bytes) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(payload, fin=True))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_binary_frames_at_each_length_encoding_boundary_are_wsprotos(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    framed = wsframe.binary_frame(payload)
    assert framed == wsproto_frame(payload)
    assert wsframe.payload_of(framed) == payload


@given(st.binary(max_size=300))
def test_binary_frames_are_wsprotos(payload: bytes) -> None:
    assert wsframe.binary_frame(payload) == wsproto_frame(payload)
