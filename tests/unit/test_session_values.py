"""The value rules at the session's intake (protocol.md §4.3.1), and at the server API's."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rtcore import operations as api
from rtcore.config import AppConfig
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_values import nest

BAD = [
    ({b"k": 1}, "map keys must be strings or integers, not bin"),
    (nest(33), "arrays and maps may nest at most 32 levels deep"),
    ({"t": msgpack.ExtType(1, b"")}, "msgpack ext type 1 is not allowed"),
    ([float("inf")], "NaN and Infinity are not allowed"),
]


@pytest.mark.parametrize(("value", "rule"), BAD)
def test_a_hello_with_an_invalid_profile_is_closed_with_4002_naming_the_rule(
    value: Any, rule: str
) -> None:
    world = World()
    s = Session("x", world.apps, world.config, world.pending)
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, "profile": value}), MONO, NOW)
    assert isinstance(close, Close) and close.code == CloseCode.HELLO_EXPECTED
    assert close.reason.startswith("hello: profile") and rule in close.reason
    assert len(close.reason.encode()) <= 123  # fits a WebSocket close frame
    assert s.member is None and len(world.apps["default"].table) == 0


@pytest.mark.parametrize(("value", "rule"), BAD)
def test_profile_send_and_broadcast_refuse_invalid_data_and_deliver_nothing(
    value: Any, rule: str
) -> None:
    world = World()
    other = world.session()
    ok(other, t="join", id=1, ch="room")
    s = world.session()
    ok(s, t="join", id=1, ch="room")
    take(other)
    for request in (
        {"t": "profile", "id": 2},
        {"t": "send", "id": 3, "ch": "room", "ev": "e"},
        {"t": "broadcast", "id": 4, "ev": "e"},
    ):
        reply = err(s, ErrorCode.INVALID_DATA, **request, data=value)
        assert reply.message.startswith("data") and rule in reply.message
    assert take(other) == []
    assert s.member is not None and s.member.profile is None


def test_a_profile_is_checked_for_its_rules_before_its_size() -> None:
    world = World()
    s = world.session()
    err(s, ErrorCode.PROFILE_TOO_LARGE, t="profile", id=1, data="x" * 5000)
    err(s, ErrorCode.INVALID_DATA, t="profile", id=2, data=["x" * 5000, float("nan")])
    assert ok(s, t="profile", id=3, data=nest(32)) == {"channels": 0}


@pytest.mark.parametrize(
    ("session", "data", "message"),
    [
        (None, {"a": {"b": [{"Password": 1}]}}, "data.a.b[0].Password: secrets are never"),
        ({"id": "s", "Access-Token": "t"}, None, "session['Access-Token']: secrets are never"),
        ({"id": "s"}, {"idToken": "t"}, "data.idToken: secrets are never"),
        (None, {"x": {"SECRET": 1}}, "data.x.SECRET: secrets are never"),
    ],
)
def test_user_event_secrets_are_refused_at_any_depth_whatever_their_case(
    session: dict[str, Any] | None, data: dict[str, Any] | None, message: str
) -> None:
    world = World(apps=(AppConfig("default"),))
    with pytest.raises(api.ApiError) as info:
        api.publish_user_event(world.apps["default"], "u", "signin", session, data, MONO, NOW)
    assert (info.value.status, info.value.code) == (400, "bad_request")
    assert info.value.message.startswith(message), info.value.message
    # keys that merely contain a secret's name are the backend's business
    api.publish_user_event(
        world.apps["default"], "u", "signin", None, {"tokens_left": 1}, MONO, NOW
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda app: api.send(app, "room", "e", {b"k": 1}, NOW),
        lambda app: api.broadcast(app, "e", nest(33), NOW),
        lambda app: api.publish_user_event(app, "u", "signin", {"id": "\ud800"}, None, MONO, NOW),
        lambda app: api.publish_user_event(app, "u", "signin", None, {"n": 2**64}, MONO, NOW),
    ],
)
def test_server_api_values_are_refused_with_400_invalid_data(call: Any) -> None:
    world = World()
    member = world.session()
    ok(member, t="join", id=1, ch="room")
    with pytest.raises(api.ApiError) as info:
        call(world.apps["default"])
    assert (info.value.status, info.value.code) == (400, "invalid_data")
    assert not any(isinstance(fr, f.Msg | f.UserEvent) for fr in take(member))
