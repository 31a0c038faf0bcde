"""The sans-IO parts of hooks and webhooks: [apps.hooks] / [[apps.webhooks]] as check-config
reads them, hook answers, the circuit breaker, the join cache, signatures, the event queue
and its backoff."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore import config as cfg
from rtcore.core.hooks import answers
from rtcore.core.hooks.breaker import Breaker
from rtcore.core.hooks.cache import MAX_ENTRIES, AnswerCache
from rtcore.core.hooks.signing import signature, signed_headers, verify
from rtcore.core.permissions import MAX_GRANT_PATTERNS
from rtcore.core.webhooks import EventQueue, retry_delay

SECRET = "s" * 32
ENV = {"HOOKS": SECRET, "SHORT": "short"}


def app(**extra: Any) -> dict[str, Any]:
    return {"apps": [{"name": "a", **extra}]}


def errors(raw: dict[str, Any]) -> str:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(raw, env=ENV)
    return str(caught.value)


def test_hooks_and_webhooks_are_read() -> None:
    raw = app(
        hooks={"join_url": "https://backend.example/j", "secret_env": "HOOKS", "timeout": 1},
        channels=[{"pattern": "t-*", "join": "hook"}],
        webhooks=[
            {
                "url": "http://127.0.0.1:9/e",
                "secret_env": "HOOKS",
                "events": ["client_message"],
                "channels": ["t-*"],
            }
        ],
    )
    (a,) = cfg.from_dict(raw, env=ENV).apps
    assert a.hooks is not None and a.hooks.join_url == "https://backend.example/j"
    assert a.hooks.timeout == 1.0 and a.hooks.secret == SECRET
    assert a.webhooks[0].wants("client_message", "t-1")
    assert not a.webhooks[0].wants("client_message", "u-1")
    assert not a.webhooks[0].wants("channel_occupied", "t-1")


CONNECT = {"connect_url": "http://backend.example/c", "secret_env": "HOOKS"}


def test_a_connect_hook_signs_users_in_without_session_settings() -> None:
    """session_required and granted or user-limited rules need users and grants, which a
    connect hook gives; channel tokens still need the session settings' key."""
    raw = app(
        hooks=CONNECT,
        session_required=True,
        channels=[{"pattern": "t-*", "join": "granted"}, {"pattern": "dm#*", "user_limited": True}],
    )
    (a,) = cfg.from_dict(raw, env=ENV).apps
    assert a.session_required and a.session is None
    refused = errors(app(hooks=CONNECT, channels=[{"pattern": "t-*", "join": "token"}]))
    assert "apps[0].channels[0]: 'token' needs the app's session settings" in refused


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"hooks": {"join_url": "ftp://x/j", "secret_env": "HOOKS"}}, "apps[0].hooks.join_url"),
        ({"hooks": {"join_url": "http:///j", "secret_env": "HOOKS"}}, "with a host"),
        ({"hooks": {"join_url": "http://x:99999/", "secret_env": "HOOKS"}}, "invalid port"),
        ({"hooks": {"join_url": "http://x/j"}}, "needs secret_env"),
        ({"hooks": {"join_url": "http://x/j", "secret_env": "NOPE"}}, "NOPE is not set"),
        ({"hooks": {"join_url": "http://x/j", "secret_env": "SHORT"}}, "at least 32"),
        ({"hooks": {"secret_env": "HOOKS"}}, "at least one of connect_url"),
        ({"hooks": {"join_url": "http://x/j", "secret_env": "HOOKS", "tmeout": 1}}, "unknown"),
        ({"hooks": {"join_url": "http://x/j", "secret_env": "HOOKS", "timeout": 0}}, "positive"),
        ({"channels": [{"pattern": "t-*", "join": "hook"}]}, "needs apps[0].hooks.join_url"),
        ({"channels": [{"pattern": "t-*", "presence": "hook"}]}, "presence: must be one of"),
        (
            {
                "hooks": {"join_url": "http://x/j", "secret_env": "HOOKS"},
                "channels": [{"pattern": "t-*", "send": "hook"}],
            },
            "needs apps[0].hooks.publish_url",
        ),
        ({"webhooks": [{"url": "nope", "secret_env": "HOOKS"}]}, "webhooks[0].url"),
        ({"webhooks": [{"url": "http://x/", "secret_env": "HOOKS", "events": ["x"]}]}, "events"),
        (
            {
                "webhooks": [
                    {"url": "http://x/", "secret_env": "HOOKS", "events": ["client_message"]}
                ]
            },
            "client_message needs channel globs",
        ),
        ({"webhooks": [{"url": "http://x/", "secret_env": "HOOKS", "queue_size": 0}]}, "positive"),
    ],
)
def test_check_config_names_each_broken_key(extra: dict[str, Any], message: str) -> None:
    assert message in errors(app(**extra))


TOO_MANY_GRANTS = json.dumps(
    {"allow": True, "grants": {f"g{i}": ["join"] for i in range(MAX_GRANT_PATTERNS + 1)}}
).encode()


def test_answers_are_checked() -> None:
    allow = answers.parse("join", 200, b'{"allow": true, "info": {"r": 1}}')
    assert allow.allow and allow.info == {"r": 1}
    deny = answers.parse("join", 200, b'{"allow": false, "code": "nope", "message": "m"}')
    assert (deny.allow, deny.code, deny.message) == (False, "nope", "m")
    connect = answers.parse(
        "connect", 200, b'{"allow": true, "user": "u", "grants": {"a-*": ["join"]}}'
    )
    grants = connect.grants  # compiled as a session token's grants claim is
    assert grants is not None and grants.count == 1
    assert grants.ops("a-1") == frozenset({"join"}) and grants.ops("b-1") == frozenset()
    assert answers.parse("publish", 200, b'{"allow": true}').data is answers.ABSENT
    for kind, status, body in [
        ("join", 500, b'{"allow": true}'),
        ("join", 200, b"nope"),
        ("join", 200, b"[]"),
        ("join", 200, b'{"allow": "yes"}'),
        ("join", 200, b'{"allow": true, "data": 1}'),  # a join answer has no data
        ("join", 200, b'{"allow": false, "code": "Not OK"}'),
        ("connect", 200, b'{"allow": true, "user": ""}'),
        ("connect", 200, b'{"allow": true, "grants": {"a": ["fly"]}}'),
        ("connect", 200, b'{"allow": true, "grants": {"a b": ["join"]}}'),  # a name's alphabet
        ("connect", 200, b'{"allow": true, "grants": ["a"]}'),
        ("connect", 200, TOO_MANY_GRANTS),  # the grants claim's bound
        ("publish", 200, b'{"allow": true, "data": {"x": NaN}}'),
    ]:
        with pytest.raises(answers.AnswerError):
            answers.parse(kind, status, body)


def test_the_breaker_opens_probes_and_closes() -> None:
    breaker = Breaker(failures=3, open_for=10)
    for _ in range(2):
        breaker.failed(0)
    assert breaker.allow(0) and breaker.state(0) == "closed"
    breaker.failed(1)
    assert breaker.state(1) == "open" and not breaker.allow(5)
    assert breaker.state(11) == "half_open"
    assert breaker.allow(11) and not breaker.allow(11)  # one probe only
    breaker.failed(12)  # the probe failed: open again, from now
    assert breaker.state(21) == "open" and breaker.opened_total == 2
    assert breaker.allow(22)
    breaker.succeeded()
    assert breaker.state(22) == "closed" and breaker.allow(22)


def test_the_join_cache_expires_and_stays_bounded() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl=5)
    cache.put(("u", "c"), "yes", now=0)
    assert cache.get(("u", "c"), 4.9) == "yes" and cache.get(("u", "c"), 5) is None
    for i in range(MAX_ENTRIES + 10):
        cache.put((str(i), "c"), "x", now=1)
    assert len(cache) == MAX_ENTRIES
    off: AnswerCache[str] = AnswerCache(ttl=0)
    off.put(("u", "c"), "yes", 0)
    assert off.get(("u", "c"), 0) is None


def test_a_signature_verifies_only_its_body_secret_and_time() -> None:
    headers = signed_headers(SECRET, 1_700_000_000.7, b"{}")
    ts, sig = headers["X-Rtcore-Timestamp"], headers["X-Rtcore-Signature"]
    assert ts == "1700000000" and sig == signature(SECRET, ts, b"{}")
    assert verify(SECRET, ts, b"{}", sig, wall=1_700_000_100)
    assert not verify(SECRET, ts, b"{ }", sig, wall=1_700_000_100)
    assert not verify("t" * 32, ts, b"{}", sig, wall=1_700_000_100)
    assert not verify(SECRET, ts, b"{}", sig, wall=1_700_000_301)
    assert not verify(SECRET, "soon", b"{}", sig, wall=1_700_000_000)


def test_the_event_queue_is_bounded_and_counts_what_it_drops() -> None:
    queue = EventQueue(limit=3)
    assert [queue.push({"n": i}) for i in range(5)] == [True, True, True, False, False]
    assert (len(queue), queue.dropped, queue.queued) == (3, 2, 3)
    assert queue.take(2) == [{"n": 0}, {"n": 1}] and len(queue) == 1


@given(st.integers(1, 60), st.floats(0, 1, exclude_max=True))
def test_the_backoff_is_jittered_below_its_cap(attempt: int, unit: float) -> None:
    delay = retry_delay(attempt, 0.5, 30.0, unit)
    assert 0 <= delay <= min(30.0, 0.5 * 2 ** (attempt - 1))
    assert retry_delay(attempt, 0.5, 30.0, 0.999) > 0
