"""Server-side membership (rtcore.core.membership, protocol.md §5.7): adds and removes from the
server API, the ``subscribe`` claim at hello, the users' remembered channels, and the bounds."""

from __future__ import annotations

from typing import Any

import jwt
import msgpack
import pytest

from rtcore import operations as api
from rtcore.config import AppConfig, Limits
from rtcore.config.model import ChannelRule
from rtcore.core.auth import MAX_SUBSCRIBE, SessionSettings, parse_subscribe
from rtcore.core.server_channels import ServerChannels
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, codec
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, ok, take

SECRET = "s" * 32
SESSION = SessionSettings(key=SECRET)


def test_subscribe_claim_shapes_and_bounds() -> None:
    assert parse_subscribe(None) == ()
    assert parse_subscribe(["a", "b", "a"]) == ("a", "b")
    assert len(parse_subscribe([f"c{i}" for i in range(MAX_SUBSCRIBE)])) == MAX_SUBSCRIBE
    with pytest.raises(ValueError, match="at most 64"):
        parse_subscribe([f"c{i}" for i in range(MAX_SUBSCRIBE + 1)])
    with pytest.raises(ValueError, match="must be an array"):
        parse_subscribe("room")
    with pytest.raises(ValueError, match="must be an array"):
        parse_subscribe({"room": 1})
    with pytest.raises(ValueError, match=r"\[1\] must be a channel name"):
        parse_subscribe(["ok", 7])
    with pytest.raises(ValueError, match=r"\[0\]: channel name"):
        parse_subscribe(["bad name"])


def test_remembered_channels_are_bounded_oldest_first() -> None:
    remembered = ServerChannels(limit=3)
    for channel in ("a", "b", "c"):
        remembered.remember("u1", channel)
    remembered.remember("u2", "d")
    assert remembered.of("u1") == ["b", "c"] and remembered.of("u2") == ["d"]
    remembered.forget("u1", "b")
    remembered.forget("u1", "never")
    assert remembered.of("u1") == ["c"] and len(remembered) == 2
    remembered.forget("u1", "c")
    assert remembered.of("u1") == [] and len(remembered) == 1


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")


def world(**limits: Any) -> World:
    rules = (ChannelRule("private:*", join="nobody", history_size=10),)
    return World(Limits(**limits), apps=(AppConfig("default", session=SESSION, channels=rules),))


def connect(w: World, user: str | None, **claims: Any) -> tuple[Session, list[Any]]:
    w.count += 1
    s = Session(f"c{w.count}", w.apps, w.config, w.pending)
    hello: dict[str, Any] = {"t": "hello", "v": 1, "echo": False}
    if user is not None:
        hello["token"] = token(user, **claims)
    close = s.receive(msgpack.packb(hello), MONO, NOW)
    assert close is None, close
    frames = take(s)
    assert isinstance(frames[0], f.Welcome)
    return s, frames[1:]


def test_an_add_puts_every_connection_of_the_user_in_and_the_user_back_at_hello() -> None:
    w = world()
    app = w.apps["default"]
    a1, _ = connect(w, "alice")
    a2, _ = connect(w, "alice")
    bob, _ = connect(w, "bob")
    ok(bob, t="join", id=1, ch="room")
    take(bob)
    app.send("private:1", "x", 1, wall=NOW)  # a history channel: its stream has offset 1

    done = api.add_member(app, "private:1", "alice", None, 128, NOW)

    assert done.result == {"added": 2, "full": 0}
    for s in (a1, a2):
        (joined,) = take(s)
        assert joined.channel == "private:1" and joined.reason == "added"
        assert joined.offset == 1 and joined.epoch  # the position, as a join's ok has it
    assert take(bob) == []
    # A member now: it can send there (the join rule, "nobody", was not asked).
    assert ok(a1, t="send", id=2, ch="private:1", ev="hi")["recipients"] == 1  # a2 (no echo)
    # Again: nothing new.
    assert api.add_member(app, "private:1", "alice", None, 128, NOW).result["added"] == 0
    # A new connection of alice is put back at hello; bob's is not.
    _, after_hello = connect(w, "alice")
    assert [(j.channel, j.reason) for j in after_hello] == [("private:1", "added")]
    assert connect(w, "bob")[1] == []


def test_a_remove_takes_them_out_and_forgets_the_user() -> None:
    w = world()
    app = w.apps["default"]
    a1, _ = connect(w, "alice")
    api.add_member(app, "room", "alice", None, 128, NOW)
    take(a1)
    done = api.remove_member(app, "room", "alice", None, None)
    assert done.result == {"removed": 1}
    assert take(a1) == [f.Left("room", "removed", "the app took you out of 'room'")]
    assert connect(w, "alice")[1] == []


def test_an_add_of_one_connection_is_not_remembered() -> None:
    w = world()
    app = w.apps["default"]
    a1, _ = connect(w, "alice")
    a2, _ = connect(w, None)
    assert api.add_member(app, "room", None, a2.conn_id, 128, NOW).result == {"added": 1, "full": 0}
    assert [j.channel for j in take(a2)] == ["room"] and take(a1) == []
    assert api.add_member(app, "room", "bob", a1.conn_id, 128, NOW).result["added"] == 0
    assert connect(w, "alice")[1] == []
    assert api.remove_member(app, "room", None, a2.conn_id, "bye").result == {"removed": 1}
    assert take(a2) == [f.Left("room", "removed", "bye")]


def test_max_channels_bounds_adds_with_a_left_frame() -> None:
    w = world(max_channels=1)
    app = w.apps["default"]
    a1, _ = connect(w, "alice")
    ok(a1, t="join", id=1, ch="one")
    take(a1)
    assert api.add_member(app, "two", "alice", None, 1, NOW).result == {"added": 0, "full": 1}
    (left,) = take(a1)
    assert left.channel == "two" and left.reason == "removed" and "1 channels" in left.message


@pytest.mark.parametrize(
    ("channel", "user", "conn", "status", "code"),
    [
        ("bad name", "alice", None, 422, "invalid_channel"),
        ("room", None, None, 400, "bad_request"),
        ("room", "", None, 400, "bad_request"),
        ("room", 7, None, 400, "bad_request"),
        ("room", None, ["c1"], 400, "bad_request"),
    ],
)
def test_bad_adds_and_removes_are_refused(
    channel: str, user: Any, conn: Any, status: int, code: str
) -> None:
    app = world().apps["default"]
    for call in (
        lambda: api.add_member(app, channel, user, conn, 128, NOW),
        lambda: api.remove_member(app, channel, user, conn, None),
    ):
        with pytest.raises(api.ApiError) as caught:
            call()
        assert (caught.value.status, caught.value.code) == (status, code)
    with pytest.raises(api.ApiError, match="at most 256"):
        api.remove_member(app, "room", "alice", None, "x" * 257)


def test_the_subscribe_claim_joins_at_hello_past_the_join_rule() -> None:
    w = world()
    s, joined = connect(w, "alice", subscribe=["private:1", "news"])
    assert [(j.channel, j.reason) for j in joined] == [
        ("private:1", "subscribe"),
        ("news", "subscribe"),
    ]
    assert joined[0].offset == 0 and joined[1].offset is None  # history channel: a position
    assert s.member is not None and set(s.member.channels) == {"private:1", "news"}


@pytest.mark.parametrize(
    ("claim", "limits", "reason"),
    [
        ("room", {}, "must be an array"),
        ([f"c{i}" for i in range(65)], {}, "at most 64"),
        (["a", "b", "c"], {"max_channels": 2}, "lists 3 channels"),
        (["no spaces"], {}, "channel name"),
    ],
)
def test_a_bad_subscribe_claim_refuses_the_hello(
    claim: Any, limits: dict[str, Any], reason: str
) -> None:
    w = world(**limits)
    s = Session("c1", w.apps, w.config, w.pending)
    hello = {"t": "hello", "v": 1, "token": token("alice", subscribe=claim)}
    close = s.receive(codec.pack(hello), MONO, NOW)
    assert close is not None and close.code == CloseCode.SESSION_INVALID
    assert reason in close.reason


def test_the_python_client_tracks_a_joined_channel_without_rejoining_it() -> None:
    from rtcore.client._channels import Channels
    from rtcore.protocol.position import Position

    reports: list[Any] = []
    channels = Channels(reports.append)
    channels.server_joined(f.Joined("room:42", "added", "e1", 17))
    channels.server_joined(f.Joined("news", "subscribe"))
    assert channels.positions == {"room:42": Position("e1", 17)}
    assert channels.rejoin == {}  # the server puts it back, not the client
    msg = f.Msg("room:42", "x", None, None, 0, "m", offset=17, epoch="e1")
    assert channels.seen(msg)  # at the position: received already
    member = {"id": "c7", "user": "bob", "data": None}
    channels.members.apply(f.MemberEvent("member_join", "room:42", member))
    assert channels.members.members("room:42") == [member]  # its member list is kept
    frame = f.Joined("room:42", "added", "e1", 17)
    assert codec.decode_server_frame(codec.encode(frame)) == frame
