"""Apps' settings enforced by the session: keys, sessions, permissions, channel rules, limits."""

from __future__ import annotations

import jwt
import msgpack
import pytest

from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import ApiKey, SessionSettings
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, err, ok, take

SECRET = "s" * 32
SESSIONS = SessionSettings(key=SECRET)


def token(user: str = "alice", secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"sub": user, "sid": "sess-1", "exp": NOW + 60, **claims}, secret, "HS256")


def hello_close(world: World, **hello: object) -> int | None:
    s = Session("x", world.apps, world.config, world.pending, remote="10.0.0.9")
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, **hello}), MONO, NOW)
    return None if close is None else int(close.code)


KEYED = AppConfig(
    "a",
    api_keys=(ApiKey("good"), ApiKey("old", expires=NOW - 1)),
    api_key_required=True,
    session=SESSIONS,
)


@pytest.mark.parametrize(
    ("app", "hello", "code"),
    [
        (KEYED, {}, CloseCode.API_KEY_MISSING),
        (KEYED, {"key": "bad"}, CloseCode.API_KEY_INVALID),
        (KEYED, {"key": "old"}, CloseCode.API_KEY_EXPIRED),
        (KEYED, {"key": "good"}, None),
        (AppConfig("a", enabled=False), {}, CloseCode.APP_DISABLED),
        (AppConfig("a", session=SESSIONS, session_required=True), {}, CloseCode.SESSION_MISSING),
        (AppConfig("a", session=SESSIONS, session_required=True), {"token": token()}, None),
        (
            AppConfig("a", session=SESSIONS),
            {"token": token(exp=NOW - 60)},
            CloseCode.SESSION_EXPIRED,
        ),
        (
            AppConfig("a", session=SESSIONS),
            {"token": token(secret="o" * 32)},
            CloseCode.SESSION_INVALID,
        ),
        (AppConfig("a"), {"token": token()}, CloseCode.SESSION_INVALID),  # app takes no tokens
        (AppConfig("a", max_connections=1), {}, CloseCode.TOO_MANY_CONNECTIONS),
    ],
)
def test_hello_is_checked_against_the_app(
    app: AppConfig, hello: dict[str, object], code: int | None
) -> None:
    world = World(apps=(app,))
    if app.max_connections == 1:
        world.session()
    assert hello_close(world, **hello) == code


def test_a_valid_token_identifies_the_user_in_welcome_and_presence() -> None:
    world = World(apps=(AppConfig("a", session=SESSIONS),))
    s = Session("c", world.apps, world.config, world.pending)
    hello = msgpack.packb({"t": "hello", "v": 1, "token": token("bob")})
    assert s.receive(hello, MONO, NOW) is None
    (welcome,) = take(s)
    assert welcome.user == "bob"
    ok(s, t="join", id=1, ch="room", echo=True)
    assert s.member is not None and s.member.user == "bob"


def test_permissions_and_channel_rules() -> None:
    app = AppConfig(
        "a",
        session=SESSIONS,
        allow_client_join=False,
        allow_client_broadcast=False,
        channels=(
            ChannelRule("public-*", join="anyone", send="signed_in"),
            ChannelRule("vip-*", join="signed_in"),
            ChannelRule("admin-*", join="nobody", send="nobody"),
        ),
    )
    world = World(apps=(app,))
    anon = world.session()
    user = world.session({"token": token()})
    e = err(anon, ErrorCode.FORBIDDEN, t="join", id=1, ch="random")  # no rule: allow_client_join
    assert "joining 'random' is not allowed" in e.message
    err(anon, ErrorCode.FORBIDDEN, t="join", id=2, ch="vip-room")
    assert (
        "needs a signed-in user"
        in err(anon, ErrorCode.FORBIDDEN, t="join", id=3, ch="vip-x").message
    )
    ok(user, t="join", id=1, ch="vip-room")
    err(user, ErrorCode.FORBIDDEN, t="join", id=2, ch="admin-panel")
    ok(anon, t="join", id=4, ch="public-lobby")
    ok(user, t="join", id=3, ch="public-lobby")
    err(anon, ErrorCode.FORBIDDEN, t="send", id=5, ch="public-lobby", ev="e")
    assert ok(user, t="send", id=4, ch="public-lobby", ev="e")["recipients"] == 2
    err(user, ErrorCode.FORBIDDEN, t="broadcast", id=5, ev="e")


def test_client_sends_can_be_turned_off() -> None:
    world = World(apps=(AppConfig("a", allow_client_send=False),))
    s = world.session()
    ok(s, t="join", id=1, ch="room")
    err(s, ErrorCode.FORBIDDEN, t="send", id=2, ch="room", ev="e")


def test_rate_limited_requests_get_the_limiter_message_and_retry_after() -> None:
    app = AppConfig(
        "a",
        rate_limits=(
            Rule("sends", 2, 1, error_message="easy"),
            Rule("joins", 1, 60, operations=frozenset({"join"})),
        ),
    )
    world = World(apps=(app,))
    s = world.session()
    ok(s, t="join", id=1, ch="room", echo=False)
    e = err(s, ErrorCode.RATE_LIMITED, t="join", id=2, ch="other")
    assert (e.limiter, e.message, e.retry_after) == ("joins", "rate limit exceeded", 60_000)
    ok(s, t="send", id=3, ch="room", ev="e")  # "sends" has one token left
    e = err(s, ErrorCode.RATE_LIMITED, t="send", id=4, ch="room", ev="e")
    assert (e.limiter, e.message, e.retry_after) == ("sends", "easy", 500)
    ok(s, t="leave", id=5, ch="room")  # leave is never limited
    assert not s.member.channels  # type: ignore[union-attr]


def test_anonymous_clients_share_their_ip_budget_and_users_their_user_budget() -> None:
    app = AppConfig("a", session=SESSIONS, rate_limits=(Rule("r", 1, 60),))
    world = World(apps=(app,))
    a1, a2 = world.session(remote="10.1.1.1"), world.session(remote="10.1.1.1")
    other_ip = world.session(remote="10.2.2.2")
    u1 = world.session({"token": token("u")}, remote="10.1.1.1")
    u2 = world.session({"token": token("u")}, remote="10.3.3.3")
    ok(a1, t="members", id=1, ch="x")
    err(a2, ErrorCode.RATE_LIMITED, t="members", id=1, ch="x")  # same IP: same bucket
    ok(other_ip, t="members", id=1, ch="x")
    ok(u1, t="members", id=1, ch="x")  # signed in: the user's bucket, not the IP's
    err(u2, ErrorCode.RATE_LIMITED, t="members", id=1, ch="x")  # same user, another IP


def test_a_client_hammering_past_the_threshold_is_disconnected() -> None:
    app = AppConfig("a", rate_limits=(Rule("r", 1, 60),), refusals_before_disconnect=3)
    world = World(apps=(app,))
    s = world.session()
    ok(s, t="members", id=1, ch="x")
    for i in range(3):
        err(s, ErrorCode.RATE_LIMITED, t="members", id=2 + i, ch="x")
    close = s.receive(msgpack.packb({"t": "members", "id": 9, "ch": "x"}), MONO, NOW)
    assert close is not None and close.code == CloseCode.RATE_LIMIT_ABUSE


def test_revalidate_after_new_settings() -> None:
    world = World(apps=(KEYED,))
    s = world.session({"key": "good"})
    assert s.revalidate(NOW) is None
    app = world.apps["a"]
    app.apply(AppConfig("a", api_keys=(ApiKey("newer"),), api_key_required=True))
    assert s.revalidate(NOW).code == CloseCode.API_KEY_INVALID  # type: ignore[union-attr]
    app.apply(AppConfig("a", api_keys=(ApiKey("good", expires=NOW),), api_key_required=True))
    assert s.revalidate(NOW).code == CloseCode.API_KEY_EXPIRED  # type: ignore[union-attr]
    app.apply(AppConfig("a", enabled=False))
    assert s.revalidate(NOW).code == CloseCode.APP_DISABLED  # type: ignore[union-attr]
    app.apply(AppConfig("a", session=SESSIONS, session_required=True))
    assert s.revalidate(NOW).code == CloseCode.SESSION_MISSING  # type: ignore[union-attr]
    app.apply(AppConfig("a"))
    assert s.revalidate(NOW) is None
    del world.apps["a"]
    assert s.revalidate(NOW).code == CloseCode.UNKNOWN_APP  # type: ignore[union-attr]


def test_system_frames_cannot_be_forged_with_event_names() -> None:
    world = World()
    a, b = world.session(), world.session()
    ok(a, t="join", id=1, ch="room")
    ok(b, t="join", id=1, ch="room")
    take(a)
    ok(b, t="send", id=2, ch="room", ev="member_join", data={"id": "fake"})
    (msg,) = take(a)
    assert isinstance(msg, f.Msg) and msg.event == "member_join"  # an app event, not presence


EXPIRING = AppConfig("a", session=SessionSettings(key=SECRET, expire_connections=True, leeway=5))


def test_connections_close_when_their_token_expires_unless_refreshed() -> None:
    world = World(apps=(EXPIRING,))
    s = world.session({"token": token("alice", exp=NOW + 60)})
    assert s.revalidate(NOW + 64) is None  # within the leeway
    assert s.revalidate(NOW + 66).code == CloseCode.SESSION_EXPIRED  # type: ignore[union-attr]
    fresh = token("alice", exp=NOW + 600, sid="sess-2")
    assert ok(s, t="refresh", id=1, token=fresh) == {"expires": int((NOW + 600) * 1000)}
    assert s.revalidate(NOW + 66) is None
    app = world.apps["a"]
    assert list(app.table.session("alice", "sess-2")) == [s.conn_id]
    assert not app.table.session("alice", "sess-1")


def test_token_expiry_is_ignored_unless_configured() -> None:
    world = World(apps=(AppConfig("a", session=SESSIONS),))
    s = world.session({"token": token("alice", exp=NOW + 60)})
    assert s.revalidate(NOW + 3600) is None


def test_refresh_refusals() -> None:
    world = World(apps=(EXPIRING, AppConfig("b")))
    s = world.session({"token": token("alice")})
    err(s, ErrorCode.FORBIDDEN, t="refresh", id=1, token=token("mallory"))
    err(s, ErrorCode.INVALID_TOKEN, t="refresh", id=2, token=token("alice", secret="o" * 32))
    err(s, ErrorCode.INVALID_TOKEN, t="refresh", id=3, token=token("alice", exp=NOW - 60))
    world.apps["a"].end_session("alice", "sess-9", MONO, NOW)
    err(s, ErrorCode.INVALID_TOKEN, t="refresh", id=4, token=token("alice", sid="sess-9"))
    anon = world.session()
    e = err(anon, ErrorCode.FORBIDDEN, t="refresh", id=1, token=token("alice"))
    assert "reconnect" in e.message
    plain = World(apps=(AppConfig("b"),)).session()
    err(plain, ErrorCode.FORBIDDEN, t="refresh", id=1, token=token("alice"))
