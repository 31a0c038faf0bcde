"""Server-API operations and user events without I/O: validation, delivery, revocation."""

from __future__ import annotations

import pytest

from rtcore import operations as api
from rtcore.config import AppConfig
from rtcore.core.members import Member
from rtcore.protocol import CloseCode
from rtcore.protocol import frames as f
from tests.helpers import frames_of
from tests.unit.test_session import MONO, NOW, World


def member(world: World, user: str | None, session: str | None) -> Member:
    s = world.session()
    assert s.member is not None
    app = world.apps[world.config.apps[0].name]
    app.table.disconnect(s.member)  # re-register with an identity, as a token would give
    s.member.user, s.member.session = user, session
    app.table.connect(s.member)
    s.outbox.items.clear()
    return s.member


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "signin", None, None), "user must be a non-empty string"),
        (("u", "Sign In", None, None), "event must be 1-64 characters"),
        (("u", "signout", None, None), "a signout needs the session it ends"),
        (("u", "signin", {"id": "s", "token": "t"}, None), "session.token: secrets are never"),
        (("u", "signin", None, {"password_hash": "x"}), "data.password_hash: secrets"),
        (("u", "signin", {"device": "phone"}, None), "session.id must be a string"),
        (("u", "signin", [], None), "session must be an object"),
    ],
)
def test_user_events_are_validated(args: tuple[object, ...], message: str) -> None:
    world = World()
    with pytest.raises(api.ApiError) as info:
        api.publish_user_event(world.apps["default"], *args, MONO, NOW)  # type: ignore[arg-type]
    assert info.value.status == 400 and info.value.code == "bad_request"
    assert message in info.value.message


def test_a_signout_reaches_the_user_only_and_ends_its_session_for_the_ttl() -> None:
    world = World(apps=(AppConfig("default", revocation_ttl=60),))
    app = world.apps["default"]
    a1, a2 = member(world, "alice", "s1"), member(world, "alice", "s2")
    bob, anon = member(world, "bob", "s3"), member(world, None, None)
    out = api.publish_user_event(app, "alice", "signout", {"id": "s1"}, {"name": "A"}, MONO, NOW)
    assert out.result == {"delivered": 2, "ended_sessions": ["s1"], "closed": 1}
    assert [(m.id, c.code) for m, c in out.closing] == [(a1.id, CloseCode.SESSION_ENDED)]
    for m in (a1, a2):
        (event,) = frames_of(m.outbox.items)
        assert event == f.UserEvent("signout", {"id": "s1"}, {"name": "A"}, int(NOW * 1000))
    assert bob.outbox.items == [] and anon.outbox.items == []
    assert app.session_ended("alice", "s1", MONO + 59)
    assert not app.session_ended("alice", "s2", MONO)
    assert not app.session_ended("alice", "s1", MONO + 60)  # the TTL passed: forgotten
    app.end_session("alice", "s9", MONO, NOW)
    app.sweep(MONO + 61)
    assert app._revoked == {}


def test_disconnects_and_stats() -> None:
    world = World()
    app = world.apps["default"]
    a1, a2 = member(world, "ann", "x"), member(world, "ann", "y")
    app.join(a1, "room", echo=False)
    out = api.disconnect_user(app, "ann")
    assert out.result == {"closed": 2}
    assert {m.id for m, _ in out.closing} == {a1.id, a2.id}
    assert {c.code for _, c in out.closing} == {CloseCode.DISCONNECTED}
    out = api.disconnect_session(app, "ann", "y", revoke=False, now=MONO, wall=NOW)
    assert [m.id for m, _ in out.closing] == [a2.id] and not app.session_ended("ann", "y", MONO)
    assert api.stats(app).result == {"connections": 2, "channels": 1, "members": {"room": 1}}


def test_server_side_names_are_validated_with_422() -> None:
    world = World()
    with pytest.raises(api.ApiError) as info:
        api.send(world.apps["default"], "no spaces", "e", None, NOW)
    assert (info.value.status, info.value.code) == (422, "invalid_channel")
    with pytest.raises(api.ApiError) as info:
        api.broadcast(world.apps["default"], "", None, NOW)
    assert (info.value.status, info.value.code) == (422, "invalid_event")


def test_the_in_process_api_error_is_a_top_level_name() -> None:
    import rtcore
    from rtcore import operations

    assert rtcore.ApiError is operations.ApiError and "ApiError" in rtcore.__all__
