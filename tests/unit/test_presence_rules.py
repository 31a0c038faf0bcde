"""Channel rules' presence permission, and sessions keyed by (user, session) (sans-IO)."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

from rtcore import operations as api
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_session_security import SESSIONS, token

APP = AppConfig(
    "a",
    session=SESSIONS,
    channels=(
        ChannelRule("vip-*", join="anyone", presence="signed_in"),
        ChannelRule("quiet-*", join="anyone", presence="nobody"),
        ChannelRule("club-*", join="signed_in"),  # presence: as join
    ),
)


def presence(frames: list[Any]) -> list[tuple[str, str | None]]:
    return [(x.kind, x.member["user"]) for x in frames if isinstance(x, f.MemberEvent)]


def do(s: Session, **request: Any) -> list[Any]:
    """Send a request that must succeed; the frames queued for ``s`` before its ``ok``."""
    assert s.receive(msgpack.packb(request), MONO, NOW) is None
    *before, reply = take(s)
    assert isinstance(reply, f.Ok), reply
    return before


def test_presence_signed_in_hides_members_and_presence_from_anonymous_clients() -> None:
    world = World(apps=(APP,))
    anon, alice = world.session(), world.session({"token": token("alice")})
    assert presence(do(anon, t="join", id=1, ch="vip-1")) == []  # not even its own join
    assert presence(do(alice, t="join", id=1, ch="vip-1")) == [("member_join", "alice")]
    assert presence(take(anon)) == []
    e = err(anon, ErrorCode.FORBIDDEN, t="members", id=2, ch="vip-1")
    assert e.message == "listing the members of 'vip-1' needs a signed-in user"
    listed = ok(alice, t="members", id=2, ch="vip-1")["members"]
    assert [m["user"] for m in listed] == [None, "alice"]
    # messages are not presence: both receive them
    assert ok(alice, t="send", id=3, ch="vip-1", ev="e")["recipients"] == 2
    assert [type(x) for x in take(anon)] == [f.Msg]
    assert presence(do(anon, t="profile", id=3, data={"n": 1})) == []
    assert presence(take(alice)) == [("member_update", None)]
    assert presence(do(anon, t="leave", id=4, ch="vip-1")) == []  # echo on, yet none
    assert presence(take(alice)) == [("member_leave", None)]


def test_presence_nobody_lists_to_no_client_but_to_the_backend() -> None:
    world = World(apps=(APP,))
    anon, alice = world.session(), world.session({"token": token("alice")})
    for s in (anon, alice):
        assert presence(do(s, t="join", id=1, ch="quiet-1")) == []
    assert presence(take(anon)) == []
    for s in (anon, alice):
        e = err(s, ErrorCode.FORBIDDEN, t="members", id=2, ch="quiet-1")
        assert e.message == "listing the members of 'quiet-1' is not allowed"
    backend = api.members(world.apps["a"], "quiet-1", None, None, 100).result
    assert [m["user"] for m in backend["members"]] == [None, "alice"]
    alice.disconnected()
    assert presence(take(anon)) == []


def test_presence_follows_the_join_policy_unless_set() -> None:
    world = World(apps=(APP,))
    anon = world.session()
    alice, bob = (world.session({"token": token(u)}) for u in ("a", "b"))
    ok(alice, t="join", id=1, ch="club-1")
    err(anon, ErrorCode.FORBIDDEN, t="members", id=1, ch="club-1")
    ok(bob, t="members", id=1, ch="club-1")  # may join, so may list without joining
    assert presence(do(anon, t="join", id=2, ch="lobby")) == [("member_join", None)]
    ok(alice, t="join", id=2, ch="lobby")  # no rule: allow_client_join, so anyone sees
    assert presence(take(anon)) == [("member_join", "a")]
    ok(anon, t="members", id=3, ch="lobby")


def test_a_reload_changes_who_receives_presence_at_once() -> None:
    world = World(apps=(APP,))
    anon, alice = world.session(), world.session({"token": token("alice")})
    for s in (anon, alice):
        ok(s, t="join", id=1, ch="vip-1")
    take(anon)
    take(alice)
    open_rule = ChannelRule("vip-*", presence="anyone")
    world.apps["a"].apply(attrs.evolve(APP, channels=(open_rule,)))
    ok(alice, t="profile", id=2, data=1)
    assert presence(take(anon)) == [("member_update", "alice")]
    world.apps["a"].apply(APP)  # back to signed_in: the signed-in group is rebuilt
    assert presence(do(alice, t="profile", id=3, data=2)) == [("member_update", "alice")]
    assert presence(take(anon)) == []


# -- sign-outs and session ends are keyed by (user, session) ----------------------------------


def hello(world: World, user: str, sid: str) -> tuple[Session, int | None]:
    s = Session(f"{user}-{world.count}", world.apps, world.config, world.pending)
    world.count += 1
    data = msgpack.packb({"t": "hello", "v": 1, "token": token(user, sid=sid)})
    close = s.receive(data, MONO, NOW)
    return s, None if close is None else int(close.code)


def test_a_signout_does_not_end_another_users_session_with_the_same_id() -> None:
    world = World(apps=(AppConfig("a", session=SESSIONS),))
    app = world.apps["a"]
    alice, _ = hello(world, "alice", "s1")
    bob, _ = hello(world, "bob", "s1")  # session ids are the backend's: unique per user only
    out = api.publish_user_event(app, "alice", "signout", {"id": "s1"}, None, MONO, NOW)
    assert [m.id for m, _ in out.closing] == [alice.conn_id]
    assert hello(world, "alice", "s1")[1] == CloseCode.SESSION_ENDED
    assert hello(world, "bob", "s1")[1] is None
    assert ok(bob, t="refresh", id=1, token=token("bob", sid="s1"))["expires"] is not None


def test_disconnecting_a_session_names_its_user() -> None:
    world = World(apps=(AppConfig("a", session=SESSIONS),))
    app = world.apps["a"]
    alice, _ = hello(world, "alice", "s1")
    bob, _ = hello(world, "bob", "s1")
    out = api.disconnect_session(app, "bob", "s1", revoke=True, now=MONO, wall=NOW)
    assert [(m.id, c.code) for m, c in out.closing] == [(bob.conn_id, CloseCode.SESSION_ENDED)]
    assert hello(world, "bob", "s1")[1] == CloseCode.SESSION_ENDED
    assert hello(world, "alice", "s1")[1] is None
    assert app.session_ended("bob", "s1", MONO) and not app.session_ended("alice", "s1", MONO)
