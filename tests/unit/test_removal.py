"""The server takes a connection out of a channel (protocol.md §5.6): the ``left`` frame."""

from __future__ import annotations

from rtcore.client import Client
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from tests.unit.test_session import World, ok, take


def test_removal_tells_the_member_why_and_the_others_see_a_leave() -> None:
    world = World()
    a = world.session({"echo": False})
    b = world.session()
    ok(a, t="join", id=1, ch="room")
    ok(b, t="join", id=1, ch="room")
    take(a), take(b)
    app = world.apps["default"]
    assert a.member is not None

    assert app.remove(a.member, "room", "removed", "the app took you out")

    assert take(a) == [f.Left("room", "removed", "the app took you out")]
    (leave,) = take(b)
    assert isinstance(leave, f.MemberEvent) and leave.kind == "member_leave"
    assert leave.member["id"] == a.conn_id
    assert ok(b, t="members", id=2, ch="room")["members"] == [
        {"id": b.conn_id, "user": None, "data": None}
    ]
    # The connection stays: it can send, and join again.
    assert ok(a, t="join", id=2, ch="room") is not None


def test_removal_with_echo_sends_the_own_leave_first_and_of_a_non_member_nothing() -> None:
    world = World()
    a = world.session()
    ok(a, t="join", id=1, ch="room")
    take(a)
    app = world.apps["default"]
    assert a.member is not None
    assert app.remove(a.member, "room", "token_expired", "expired")
    own, left = take(a)
    assert isinstance(own, f.MemberEvent) and own.kind == "member_leave"
    assert left == f.Left("room", "token_expired", "expired")
    assert not app.remove(a.member, "room", "token_expired", "expired")
    assert take(a) == []


def test_the_left_frame_round_trips_and_the_client_forgets_the_channel() -> None:
    frame = f.Left("room:42", "grant_revoked", "no longer granted")
    assert codec.decode_server_frame(codec.encode(frame)) == frame
    client = Client("ws://127.0.0.1:1/")
    client.channels = {"room:42": None, "lobby": None}
    heard: list[f.Left] = []
    client.on_left(heard.append)
    client._dispatch(frame)
    assert heard == [frame]
    assert client.channels == {"lobby": None}
