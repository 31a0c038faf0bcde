"""The codec: round trips, totality, and the refusal of each malformed shape."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.protocol import CloseCode, ErrorCode, LocalProtocolError, RemoteProtocolError, codec
from rtcore.protocol import frames as f

ALL_TYPES = codec.CLIENT_TYPES | codec.SERVER_TYPES

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
uint = st.integers(0, codec.MAX_REQUEST_ID)
text = st.text(max_size=30)
opt_bool = st.none() | st.booleans()

frames = st.one_of(
    st.builds(
        f.Hello, uint, st.none() | text, st.none() | text, st.none() | text, values, st.booleans()
    ),
    st.builds(f.Join, uint, text, opt_bool),
    st.builds(f.Leave, uint, text, opt_bool),
    st.builds(f.GetMembers, uint, text, st.none() | uint, st.none() | uint),
    st.builds(f.UpdateProfile, uint, values, opt_bool),
    st.builds(f.Send, uint, text, text, values, opt_bool),
    st.builds(f.Broadcast, uint, text, values, opt_bool),
    st.builds(f.Refresh, uint, text),
    st.builds(
        f.Welcome,
        uint,
        text,
        uint,
        uint,
        st.dictionaries(text, st.integers(0, 2**31)),
        st.none() | text,
    ),
    st.builds(f.Ok, uint, values),
    st.builds(f.Err, st.none() | uint, text, text),
    st.builds(f.Msg, st.none() | text, text, values, st.none() | text, uint, text),
    st.builds(
        f.MemberEvent,
        st.sampled_from(f.MemberEvent.TYPES),
        text,
        st.fixed_dictionaries({"id": text, "user": st.none() | text, "data": values}),
        opt_bool,
        opt_bool,
    ),
)


@given(frames)
def test_every_frame_round_trips(frame: object) -> None:
    assert codec.decode(codec.encode(frame), allowed=ALL_TYPES) == frame


@given(frames)
def test_each_side_decodes_only_the_other_sides_frames(frame: f.Frame) -> None:
    data = codec.encode(frame)
    client_side = isinstance(frame, f.Hello | f.Join | f.Leave | f.GetMembers | f.UpdateProfile)
    client_side = client_side or isinstance(frame, f.Send | f.Broadcast | f.Refresh | f.History)
    ours, theirs = (
        (codec.decode_client_frame, codec.decode_server_frame)
        if client_side
        else (codec.decode_server_frame, codec.decode_client_frame)
    )
    assert ours(data) == frame
    with pytest.raises(RemoteProtocolError) as info:
        theirs(data)
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    if isinstance(frame, f.Msg):
        assert codec.decode_msg(data) == frame == codec.msg_from_map(codec.to_wire(frame))
    else:
        with pytest.raises(RemoteProtocolError, match="unknown frame type"):
            codec.decode_msg(data)


@given(st.binary(max_size=200))
def test_decoding_any_bytes_gives_a_frame_or_a_protocol_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except RemoteProtocolError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "t",
                "id",
                "ch",
                "ev",
                "data",
                "echo",
                "v",
                "after",
                "limit",
                "app",
                "key",
                "token",
                "profile",
            ]
        ),
        values,
    )
)
def test_decoding_any_map_gives_a_frame_or_a_protocol_error(obj: dict[str, object]) -> None:
    try:
        frame = codec.decode(msgpack.packb(obj))
    except RemoteProtocolError as exc:
        assert exc.close_code is not None or exc.code in (
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNKNOWN_TYPE,
        )
    else:
        assert type(frame).TYPE == obj["t"]


@pytest.mark.parametrize(
    ("data", "close_code"),
    [
        (b"\xc1", CloseCode.PROTOCOL_ERROR),  # never-used msgpack byte
        (b"", CloseCode.PROTOCOL_ERROR),
        (msgpack.packb([1, 2]), CloseCode.PROTOCOL_ERROR),  # not a map
        (msgpack.packb({"id": 1}), CloseCode.PROTOCOL_ERROR),  # no t
        (msgpack.packb({"t": 5}), CloseCode.PROTOCOL_ERROR),  # t not a string
        (msgpack.packb({"t": "join"}) + b"\x00", CloseCode.PROTOCOL_ERROR),  # trailing bytes
        (b"\x81\x91\x01\x01", CloseCode.PROTOCOL_ERROR),  # array as a map key
    ],
)
def test_undecodable_frames_close_the_connection(data: bytes, close_code: CloseCode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(data)
    assert info.value.close_code == close_code


@pytest.mark.parametrize(
    ("obj", "code", "request_id", "field"),
    [
        ({"t": "fly", "id": 7}, ErrorCode.UNKNOWN_TYPE, 7, "fly"),
        ({"t": "welcome", "id": 7}, ErrorCode.UNKNOWN_TYPE, 7, "welcome"),  # server-only type
        ({"t": "join", "ch": "a"}, ErrorCode.BAD_REQUEST, None, "'id'"),
        ({"t": "join", "id": -1, "ch": "a"}, ErrorCode.BAD_REQUEST, None, "'id'"),
        ({"t": "join", "id": True, "ch": "a"}, ErrorCode.BAD_REQUEST, None, "'id'"),
        ({"t": "join", "id": 3}, ErrorCode.BAD_REQUEST, 3, "'ch'"),
        ({"t": "join", "id": 3, "ch": 9}, ErrorCode.BAD_REQUEST, 3, "'ch'"),
        ({"t": "join", "id": 3, "ch": "a", "echo": "yes"}, ErrorCode.BAD_REQUEST, 3, "'echo'"),
        ({"t": "send", "id": 4, "ch": "a"}, ErrorCode.BAD_REQUEST, 4, "'ev'"),
        ({"t": "members", "id": 5, "ch": "a", "limit": "x"}, ErrorCode.BAD_REQUEST, 5, "'limit'"),
        ({"t": "profile", "id": 6}, ErrorCode.BAD_REQUEST, 6, "'data'"),
        ({"t": "hello"}, ErrorCode.BAD_REQUEST, None, "'v'"),
    ],
)
def test_bad_requests_name_the_field(
    obj: dict[str, object], code: ErrorCode, request_id: int | None, field: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(msgpack.packb(obj))
    assert info.value.close_code is None
    assert info.value.code == code
    assert info.value.request_id == request_id
    assert field in info.value.message


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    frame = codec.decode(msgpack.packb({"t": "join", "id": 1, "ch": "a", "future": [1]}))
    assert frame == f.Join(1, "a")


def test_optional_none_fields_are_omitted_but_nullable_required_ones_are_sent() -> None:
    assert codec.to_wire(f.Join(1, "a")) == {"t": "join", "id": 1, "ch": "a"}
    wire = codec.to_wire(f.Msg(None, "e", None, None, 1, "m"))
    assert wire["ch"] is None and wire["from"] is None and wire["data"] is None


msgs_and_oks = st.one_of(
    st.builds(
        f.Msg,
        st.none() | text,
        text,
        values | st.tuples(values, values),
        st.none() | text,
        uint,
        text,
        st.none() | uint,
        st.none() | text,
    ),
    st.builds(f.Ok, uint, values | st.just(()) | st.tuples(values)),
)


@given(msgs_and_oks)
def test_the_msg_and_ok_shortcuts_equal_the_spec_key_for_key_in_order(frame: f.Frame) -> None:
    # to_wire writes msg and ok out by hand (they are framed once per message and reply); the
    # bytes must be those of the generic, spec-driven encoding: same keys, same order
    assert list(codec.to_wire(frame).items()) == list(codec.spec_to_wire(frame).items())
    assert codec.encode(frame) == msgpack.packb(codec.spec_to_wire(frame), use_bin_type=True)


@given(values)
def test_pack_is_packb_and_a_failed_pack_leaves_nothing_behind(value: object) -> None:
    # pack keeps one msgpack packer per thread: a value it cannot encode must not leave
    # half a value in it for the next one
    with pytest.raises(LocalProtocolError):
        codec.pack({"a": [value, object()]})
    assert codec.pack(value) == msgpack.packb(value, use_bin_type=True)
