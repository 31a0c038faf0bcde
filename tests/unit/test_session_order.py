"""The hello checks' order, the second hello, and the "N refusals in a row" rule (sans-IO)."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import msgpack
import pytest

from rtcore.config import AppConfig
from rtcore.core.auth import ApiKey
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_session_security import SESSIONS, token

# -- protocol.md §3.4: the hello checks run in this order -----------------------------------

CHECKS = ("enabled", "api_key", "token", "session_required", "max_connections")
"""§3.4's steps, in order; each entry below makes exactly that step fail."""
FAILURES: dict[str, tuple[dict[str, Any], dict[str, Any], CloseCode]] = {
    "enabled": ({"enabled": False}, {}, CloseCode.APP_DISABLED),
    "api_key": ({}, {"key": "wrong"}, CloseCode.API_KEY_INVALID),
    "token": ({}, {"token": token(secret="o" * 32)}, CloseCode.SESSION_INVALID),
    "session_required": ({"session_required": True}, {}, CloseCode.SESSION_MISSING),
    "max_connections": ({"max_connections": 0}, {}, CloseCode.TOO_MANY_CONNECTIONS),
}
PASSING = AppConfig("a", api_keys=(ApiKey("good"),), api_key_required=True, session=SESSIONS)
"""An app every check passes for a hello with key "good" (and no token, or a valid one)."""


def hello_close(app: AppConfig, hello: dict[str, Any]) -> int | None:
    world = World(apps=(app,))
    s = Session("x", world.apps, world.config, world.pending)
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, **hello}), MONO, NOW)
    return None if close is None else int(close.code)


def failing(names: tuple[str, ...]) -> tuple[AppConfig, dict[str, Any]]:
    settings: dict[str, Any] = {}
    hello: dict[str, Any] = {"key": "good"}
    for name in names:
        settings.update(FAILURES[name][0])
        hello.update(FAILURES[name][1])
    return attrs.evolve(PASSING, **settings), hello


@pytest.mark.parametrize("name", CHECKS)
def test_each_hello_check_alone_refuses_with_its_code(name: str) -> None:
    assert hello_close(*failing(())) is None
    assert hello_close(*failing((name,))) == FAILURES[name][2]


@pytest.mark.parametrize("pair", list(itertools.combinations(CHECKS, 2)))
def test_of_two_failing_hello_checks_the_earlier_one_decides(pair: tuple[str, str]) -> None:
    # e.g. a client without a key (or for a disabled app) learns nothing about its token
    assert hello_close(*failing(pair)) == FAILURES[pair[0]][2]


def test_a_disabled_app_reveals_nothing_about_an_ended_session() -> None:
    world = World(apps=(attrs.evolve(PASSING, enabled=False),))
    world.apps["a"].end_session("alice", "sess-1", MONO, NOW)
    s = Session("x", world.apps, world.config, world.pending)
    hello = {"t": "hello", "v": 1, "key": "good", "token": token()}
    close = s.receive(msgpack.packb(hello), MONO, NOW)
    assert close is not None and close.code == CloseCode.APP_DISABLED  # not 4016


# -- a second hello --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hello",
    [
        {"t": "hello", "v": 1},
        {"t": "hello"},  # missing v
        {"t": "hello", "v": "one"},  # mistyped v
        {"t": "hello", "v": 1, "profile": 1, "app": 7},  # mistyped app
    ],
)
def test_a_second_hello_is_closed_with_4004_even_when_malformed(hello: dict[str, Any]) -> None:
    s = World().session()
    assert s.receive(msgpack.packb(hello), MONO, NOW) == Close(
        CloseCode.DUPLICATE_HELLO, "hello was already received"
    )


def test_a_second_frame_that_is_no_msgpack_map_is_still_a_protocol_error() -> None:
    s = World().session()
    close = s.receive(msgpack.packb(["hello"]), MONO, NOW)
    assert close is not None and close.code == CloseCode.PROTOCOL_ERROR


# -- "refusals_before_disconnect rate-limited requests in a row" (protocol.md §4.1) -----------

LIMITED = AppConfig("a", rate_limits=(Rule("r", 1, 10),), refusals_before_disconnect=3)
"""One request per 10 s; three rate_limited replies in a row are answered, no more."""


def members_at(s: Session, now: float, request_id: int) -> Close | None:
    return s.receive(msgpack.packb({"t": "members", "id": request_id, "ch": "x"}), now, NOW)


def test_exactly_n_refusals_in_a_row_are_answered_and_the_next_one_closes() -> None:
    s = World(apps=(LIMITED,)).session()
    ok(s, t="members", id=1, ch="x")
    for i in range(3):  # N = 3 rate_limited replies...
        err(s, ErrorCode.RATE_LIMITED, t="members", id=2 + i, ch="x")
    close = members_at(s, MONO, 9)  # ...and the (N+1)-th refusal in a row closes
    assert close == Close(
        CloseCode.RATE_LIMIT_ABUSE, "4 rate-limited requests in a row (at most 3 are answered)"
    )


def test_an_admitted_request_resets_the_refusals_in_a_row() -> None:
    s = World(apps=(LIMITED,)).session()
    ok(s, t="members", id=1, ch="x")
    for i in range(3):
        err(s, ErrorCode.RATE_LIMITED, t="members", id=2 + i, ch="x")
    assert members_at(s, MONO + 10, 5) is None  # refilled: admitted, and the row is broken
    assert isinstance(take(s)[-1], f.Ok)
    for i in range(3):  # a new row: three more answered refusals
        assert members_at(s, MONO + 10, 6 + i) is None
        (reply,) = take(s)
        assert isinstance(reply, f.Err) and reply.code == ErrorCode.RATE_LIMITED.value
    close = members_at(s, MONO + 10, 9)
    assert close is not None and close.code == CloseCode.RATE_LIMIT_ABUSE


def test_leave_is_never_limited_and_does_not_break_a_row() -> None:
    s = World(apps=(LIMITED,)).session()
    ok(s, t="members", id=1, ch="x")
    for i in range(3):
        err(s, ErrorCode.RATE_LIMITED, t="members", id=2 + i, ch="x")
    ok(s, t="leave", id=5, ch="x")
    close = members_at(s, MONO, 6)
    assert close is not None and close.code == CloseCode.RATE_LIMIT_ABUSE
