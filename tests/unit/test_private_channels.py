"""Private channels in a session (sans-IO): user-limited names, channel tokens (join, refresh,
expiry), grants in session tokens (refresh narrows them), member info per channel, and the
refusal counts (protocol.md §4.1.1, §4.1.2, §4.4.2, §5.6)."""

from __future__ import annotations

from typing import Any

import jwt
import msgpack

from rtcore.config import AppConfig, ChannelRule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_presence_rules import do
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_session_security import SECRET, SESSIONS, hello_close, token

APP = AppConfig(
    "a",
    session=SESSIONS,
    channels=(
        ChannelRule(
            "dm#*",
            join="signed_in",
            send="signed_in",
            history="signed_in",
            user_limited=True,
            history_size=10,
        ),
        ChannelRule("room:*", join="token", send="token", presence="token"),
        ChannelRule("team:*", join="granted", send="granted", presence="granted"),
    ),
)


def channel_token(channel: str, user: str | None = "alice", **claims: Any) -> str:
    body: dict[str, Any] = {"channel": channel, "exp": NOW + 60, **claims}
    if user is not None:
        body["sub"] = user
    secret = body.pop("secret", SECRET)
    return jwt.encode(body, secret, "HS256")


def left(frames: list[Any]) -> list[tuple[str, str]]:
    return [(x.channel, x.reason) for x in frames if isinstance(x, f.Left)]


def joins(frames: list[Any]) -> list[dict[str, Any]]:
    return [x.member for x in frames if isinstance(x, f.MemberEvent) and x.kind == "member_join"]


def signed_in(world: World, user: str, **claims: Any) -> Session:
    return world.session({"token": token(user, **claims)})


# -- user-limited channels ----------------------------------------------------------------


def test_a_dm_admits_the_users_its_name_lists_and_no_one_else() -> None:
    world = World(apps=(APP,))
    alice, bob, carol = (signed_in(world, u) for u in ("alice", "bob", "carol"))
    anon = world.session()
    assert ok(alice, t="join", id=1, ch="dm#alice,bob")["joined"] is True
    assert ok(bob, t="join", id=1, ch="dm#alice,bob")["joined"] is True
    e = err(carol, ErrorCode.FORBIDDEN, t="join", id=1, ch="dm#alice,bob")
    assert e.message == "joining 'dm#alice,bob': only the users its name lists may"
    err(anon, ErrorCode.FORBIDDEN, t="join", id=1, ch="dm#alice,bob")
    err(carol, ErrorCode.FORBIDDEN, t="history", id=2, ch="dm#alice,bob")
    err(carol, ErrorCode.FORBIDDEN, t="send", id=3, ch="dm#alice,bob", ev="x")
    assert ok(alice, t="send", id=2, ch="dm#alice,bob", ev="hi")["recipients"] == 2
    e = err(carol, ErrorCode.INVALID_CHANNEL, t="join", id=4, ch="dm#carol,,bob")
    assert "comma-separated user ids" in e.message
    err(carol, ErrorCode.INVALID_CHANNEL, t="join", id=5, ch="dm#" + ",".join(["carol"] * 17))
    stats = world.apps["a"].statistics.permission_refusals
    assert stats[("join", "user_limited")] == 4
    assert stats[("history", "user_limited")] == 1
    assert stats[("send", "user_limited")] == 1


# -- channel tokens -----------------------------------------------------------------------


def test_a_channel_token_admits_its_user_to_its_channel_with_its_info() -> None:
    world = World(apps=(APP,))
    alice, bob = signed_in(world, "alice"), signed_in(world, "bob")
    do(bob, t="join", id=1, ch="room:1", token=channel_token("room:1", "bob"))
    tok = channel_token("room:1", info={"role": "host"}, ops=["join", "send", "presence"])
    assert ok(alice, t="join", id=1, ch="room:1", token=tok) == {"joined": True}
    (member,) = joins(take(bob))
    assert member["user"] == "alice" and member["info"] == {"role": "host"}
    listed = ok(bob, t="members", id=2, ch="room:1")["members"]
    assert [m.get("info") for m in listed] == [None, {"role": "host"}]
    assert "info" not in listed[0]  # a token without info: no key
    assert ok(alice, t="send", id=2, ch="room:1", ev="e")["recipients"] == 2
    err(bob, ErrorCode.FORBIDDEN, t="send", id=3, ch="room:1", ev="e")  # default ops: no send


def test_bad_channel_tokens_are_refused_and_the_connection_goes_on() -> None:
    world = World(apps=(APP,))
    alice, anon = signed_in(world, "alice"), world.session()
    cases = {
        "invalid channel token": channel_token("room:1", secret="x" * 32),
        "has expired": channel_token("room:1", exp=NOW - 31),
        "is for 'room:2', not 'room:1'": channel_token("room:2"),
        "is for user 'bob'": channel_token("room:1", "bob"),
        "is for app 'b', not 'a'": channel_token("room:1", app="b"),
        "'ops' must list": channel_token("room:1", ops=["join", "own"]),
        "'exp' must be a number": channel_token("room:1", exp="soon"),
    }
    for i, (message, tok) in enumerate(cases.items()):
        e = err(alice, ErrorCode.INVALID_CHANNEL_TOKEN, t="join", id=i, ch="room:1", token=tok)
        assert message in e.message, e.message
    e = err(
        anon,
        ErrorCode.INVALID_CHANNEL_TOKEN,
        t="join",
        id=1,
        ch="room:1",
        token=channel_token("room:1", "alice"),
    )
    assert "not this connection's user" in e.message
    assert ok(anon, t="join", id=2, ch="room:1", token=channel_token("room:1", None))["joined"]
    e = err(alice, ErrorCode.FORBIDDEN, t="join", id=9, ch="room:1")
    assert e.message == "joining 'room:1' needs a channel token"
    assert ok(alice, t="join", id=10, ch="room:1", token=channel_token("room:1"))["joined"]
    refusals = world.apps["a"].statistics.permission_refusals
    assert refusals[("join", "invalid_channel_token")] == 8
    assert refusals[("join", "no_token")] == 1


def test_a_token_without_send_lets_its_holder_read_but_not_send() -> None:
    world = World(apps=(APP,))
    alice = signed_in(world, "alice")
    do(alice, t="join", id=1, ch="room:1", token=channel_token("room:1", ops=["join"]))
    e = err(alice, ErrorCode.FORBIDDEN, t="send", id=2, ch="room:1", ev="x")
    assert "does not allow 'send'" in e.message
    err(alice, ErrorCode.FORBIDDEN, t="members", id=3, ch="room:1")


def test_a_channel_token_expires_unless_refreshed() -> None:
    world = World(apps=(APP,))
    alice = signed_in(world, "alice")
    do(alice, t="join", id=1, ch="room:1", token=channel_token("room:1", exp=NOW + 60))
    do(alice, t="join", id=2, ch="room:2", token=channel_token("room:2", exp=NOW + 60))
    fresh = channel_token("room:2", exp=NOW + 600)
    assert ok(alice, t="refresh", id=3, ch="room:2", token=fresh) == {
        "expires": int((NOW + 600) * 1000)
    }
    assert alice.revalidate(NOW + 60 + 30) is None  # within the leeway: nothing yet
    assert left(take(alice)) == []
    assert alice.revalidate(NOW + 60 + 31) is None  # the connection stays
    assert left(take(alice)) == [("room:1", "token_expired")]
    assert alice.member is not None and list(alice.member.channels) == ["room:2"]
    assert world.apps["a"].statistics.channel_removals == {"token_expired": 1}


def test_a_channel_refresh_is_checked_like_a_join_token() -> None:
    world = World(apps=(APP,))
    alice = signed_in(world, "alice")
    e = err(
        alice, ErrorCode.NOT_MEMBER, t="refresh", id=1, ch="room:1", token=channel_token("room:1")
    )
    assert "join it first" in e.message
    do(alice, t="join", id=2, ch="room:1", token=channel_token("room:1", exp=NOW + 10))
    err(
        alice,
        ErrorCode.INVALID_CHANNEL_TOKEN,
        t="refresh",
        id=3,
        ch="room:1",
        token=channel_token("room:9", exp=NOW + 900),
    )
    assert alice.revalidate(NOW + 41) is None  # the refused refresh changed nothing
    assert left(take(alice)) == [("room:1", "token_expired")]


def test_a_channel_refresh_without_join_takes_the_connection_out() -> None:
    world = World(apps=(APP,))
    alice = signed_in(world, "alice")
    do(alice, t="join", id=1, ch="room:1", token=channel_token("room:1"))
    assert (
        s_receive(
            alice, t="refresh", id=2, ch="room:1", token=channel_token("room:1", ops=["presence"])
        )
        is None
    )
    frames = take(alice)
    assert left(frames) == [("room:1", "grant_revoked")]
    assert isinstance(frames[-1], f.Ok)  # the left is queued first
    assert alice.member is not None and not alice.member.channels


def test_a_channel_token_is_not_a_session_token() -> None:
    world = World(apps=(APP,))
    code = hello_close(world, token=channel_token("room:1"))
    assert code == CloseCode.SESSION_INVALID


# -- grants -------------------------------------------------------------------------------


def test_grants_decide_granted_channels() -> None:
    world = World(apps=(APP,))
    grants = {"team:red": ["join", "send"], "team:b*": ["join", "presence"]}
    alice = signed_in(world, "alice", channels=grants)
    bob = signed_in(world, "bob", channels={"team:*": ["join", "presence"]})
    assert ok(alice, t="join", id=1, ch="team:red")["joined"]
    assert ok(alice, t="send", id=2, ch="team:red", ev="x")["recipients"] == 1
    e = err(alice, ErrorCode.FORBIDDEN, t="join", id=3, ch="team:green")
    assert e.message == "joining 'team:green' needs a session token that grants 'join' on it"
    err(alice, ErrorCode.FORBIDDEN, t="members", id=4, ch="team:red")
    # presence per connection: alice may not see team:red's presence, bob may
    do(bob, t="join", id=1, ch="team:red")
    assert joins(take(alice)) == []
    do(alice, t="join", id=5, ch="team:blue")
    assert [m["user"] for m in joins(take(bob))] == []  # bob is not in team:blue
    do(bob, t="join", id=2, ch="team:blue")
    assert [m["user"] for m in joins(take(alice))] == ["bob"]  # alice sees team:blue's


def test_a_bad_grants_claim_closes_the_hello_and_refuses_a_refresh() -> None:
    world = World(apps=(APP,))
    assert hello_close(world, token=token(channels=["team:*"])) == CloseCode.SESSION_INVALID
    too_many = {f"team:{i}": ["join"] for i in range(1025)}
    assert hello_close(world, token=token(channels=too_many)) == CloseCode.SESSION_INVALID
    alice = signed_in(world, "alice")
    e = err(
        alice, ErrorCode.INVALID_TOKEN, t="refresh", id=1, token=token(channels={"team:x": ["fly"]})
    )
    assert "'channels' claim" in e.message


def test_a_refresh_that_narrows_the_grants_removes_the_connection() -> None:
    world = World(apps=(APP,))
    both = {"team:red": ["join", "send", "presence"], "team:blue": ["join"]}
    alice = signed_in(world, "alice", channels=both)
    bob = signed_in(world, "bob", channels={"team:*": ["join", "presence"]})
    do(alice, t="join", id=1, ch="team:red")
    do(alice, t="join", id=2, ch="team:blue")
    do(bob, t="join", id=1, ch="team:red")
    take(alice), take(bob)
    narrowed = token("alice", channels={"team:blue": ["join"]})
    assert s_receive(alice, t="refresh", id=3, token=narrowed) is None
    frames = take(alice)
    assert left(frames) == [("team:red", "grant_revoked")]
    assert isinstance(frames[-1], f.Ok)
    assert alice.member is not None and list(alice.member.channels) == ["team:blue"]
    leaves = [x for x in take(bob) if isinstance(x, f.MemberEvent)]
    assert [(x.kind, x.member["user"]) for x in leaves] == [("member_leave", "alice")]
    err(alice, ErrorCode.FORBIDDEN, t="send", id=4, ch="team:red", ev="x")


def s_receive(s: Session, **request: Any) -> Any:
    return s.receive(msgpack.packb(request), MONO, NOW)


def test_a_refresh_changes_who_sees_presence_without_leaving() -> None:
    world = World(apps=(APP,))
    alice = signed_in(world, "alice", channels={"team:red": ["join"]})
    bob = signed_in(world, "bob", channels={"team:*": ["join", "presence"]})
    do(alice, t="join", id=1, ch="team:red")
    do(bob, t="join", id=1, ch="team:red")
    assert joins(take(alice)) == []
    wider = token("alice", channels={"team:red": ["join", "presence"]})
    assert s_receive(alice, t="refresh", id=2, token=wider) is None
    assert left(take(alice)) == []
    do(bob, t="leave", id=2, ch="team:red")
    do(bob, t="join", id=3, ch="team:red")
    assert [m["user"] for m in joins(take(alice))] == ["bob"]
    narrower = token("alice", channels={"team:red": ["join"]})
    assert s_receive(alice, t="refresh", id=3, token=narrower) is None
    do(bob, t="leave", id=4, ch="team:red")
    do(bob, t="join", id=5, ch="team:red")
    assert joins(take(alice)) == []
    assert alice.member is not None and list(alice.member.channels) == ["team:red"]


def test_only_per_connection_presence_values_give_a_member_its_own_watched_set() -> None:
    """``Member.watching`` is read only under ``granted``, ``token`` and ``hook``: a join
    elsewhere leaves the member on the shared empty set (idle memory: 216 bytes per
    connection), and a granted channel's presence is still decided per connection."""
    world = World(apps=(APP,))
    alice = signed_in(world, "alice", channels={"team:red": ["join", "presence"]})
    bob = signed_in(world, "bob", channels={"team:red": ["join"]})
    assert alice.member is not None and bob.member is not None
    shared = bob.member.watching
    assert ok(alice, t="join", id=1, ch="lobby")["joined"]  # no rule: "anyone"
    assert alice.member.watching is shared
    assert ok(alice, t="join", id=2, ch="team:red")["joined"]
    assert ok(bob, t="join", id=1, ch="team:red")["joined"]
    assert alice.member.watching == {"team:red"} and bob.member.watching is shared
