"""What protocol.md and docs/api.md promise in prose, each checked against the core.

Every test here guards a sentence an outside client (written from the docs alone) relied on.
"""

from __future__ import annotations

import msgpack
import pytest

from rtcore import operations as api
from rtcore.config import AppConfig, Config
from rtcore.core.auth import ApiKey
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_session_security import EXPIRING, token


def test_several_apps_and_no_default_app_close_a_hello_without_app_with_4005() -> None:
    world = World(apps=("a", "b"))
    world.config = Config(apps=world.config.apps, default_app=None)
    s = Session("x", world.apps, world.config, world.pending)
    close = s.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW)
    assert close is not None and close.code == CloseCode.UNKNOWN_APP


def test_an_empty_api_key_counts_as_missing() -> None:
    world = World(apps=(AppConfig("a", api_keys=(ApiKey("good"),), api_key_required=True),))
    s = Session("x", world.apps, world.config, world.pending)
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, "key": ""}), MONO, NOW)
    assert close is not None and close.code == CloseCode.API_KEY_MISSING


def test_a_key_given_to_an_app_that_requires_none_is_ignored() -> None:
    world = World(apps=(AppConfig("a"),))
    world.session({"key": "anything"})  # welcomed


def test_an_api_key_expiring_mid_connection_closes_it_with_4012_without_a_reload() -> None:
    keyed = AppConfig("a", api_keys=(ApiKey("good", expires=NOW + 10),), api_key_required=True)
    world = World(apps=(keyed,))
    s = world.session({"key": "good"})
    assert s.revalidate(NOW + 9) is None
    close = s.revalidate(NOW + 10)
    assert close is not None and close.code == CloseCode.API_KEY_EXPIRED


@pytest.mark.parametrize(
    ("request_", "kind"),
    [
        ({"t": "join", "id": 2, "ch": "room"}, "member_join"),
        ({"t": "profile", "id": 2, "data": {"name": "new"}}, "member_update"),
        ({"t": "leave", "id": 2, "ch": "room"}, "member_leave"),
    ],
)
def test_with_echo_the_connections_own_presence_frame_precedes_the_ok(
    request_: dict[str, object], kind: str
) -> None:
    world = World()
    s = world.session()
    if request_["t"] != "join":
        ok(s, t="join", id=1, ch="room")
        take(s)
    assert s.receive(msgpack.packb(request_), MONO, NOW) is None
    frames = take(s)
    assert [type(x) for x in frames] == [f.MemberEvent, f.Ok]
    assert frames[0].kind == kind


def test_refresh_without_a_string_token_is_a_bad_request() -> None:
    world = World(apps=(EXPIRING,))
    s = world.session({"token": token("alice")})
    err(s, ErrorCode.BAD_REQUEST, t="refresh", id=1)
    err(s, ErrorCode.BAD_REQUEST, t="refresh", id=2, token=7)


def test_refresh_passes_the_rate_limiters() -> None:
    limited = AppConfig(
        "a",
        session=EXPIRING.session,
        rate_limits=(Rule("one", rate=1, per_seconds=60.0, operations=frozenset({"refresh"})),),
    )
    world = World(apps=(limited,))
    s = world.session({"token": token("alice")})
    ok(s, t="refresh", id=1, token=token("alice", sid="sess-2"))
    err(s, ErrorCode.RATE_LIMITED, t="refresh", id=2, token=token("alice", sid="sess-3"))


def test_a_refused_refresh_keeps_the_old_token_and_its_expiry() -> None:
    world = World(apps=(EXPIRING,))
    s = world.session({"token": token("alice", exp=NOW + 60)})
    err(s, ErrorCode.FORBIDDEN, t="refresh", id=1, token=token("mallory", exp=NOW + 600))
    close = s.revalidate(NOW + 66)  # past exp + leeway (5 s) of the old token
    assert close is not None and close.code == CloseCode.SESSION_EXPIRED


def test_the_session_id_is_the_tokens_sid_claim() -> None:
    world = World(apps=(EXPIRING,))
    s = world.session({"token": token("alice", sid="s-77")})
    assert list(world.apps["a"].table.session("alice", "s-77")) == [s.conn_id]


@pytest.mark.parametrize(
    ("kind", "accepted"),
    [
        ("a", True),
        ("a" * 64, True),
        ("x_9", True),
        ("a" * 65, False),
        ("9a", False),
        ("_a", False),
        ("Aa", False),
        ("", False),
    ],
)
def test_user_event_kinds_are_1_to_64_of_a_z_0_9_underscore_starting_with_a_letter(
    kind: str, accepted: bool
) -> None:
    world = World()
    app = world.apps["default"]
    if accepted:
        api.publish_user_event(app, "u1", kind, None, None, MONO, NOW)
        return
    with pytest.raises(api.ApiError) as info:
        api.publish_user_event(app, "u1", kind, None, None, MONO, NOW)
    assert (info.value.status, info.value.code) == (400, "bad_request")
