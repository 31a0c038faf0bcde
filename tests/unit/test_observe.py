"""The observability seam without I/O: app statistics, session refusals reported to a fake
observer, the log observer's rate limit, the JSON log format."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import msgpack
import pytest

from rtcore.config import AppConfig, Config
from rtcore.core.app import App, MessageIds
from rtcore.core.limits.limiter import Rule
from rtcore.core.members import Member
from rtcore.core.outbox import Outbox, Pending
from rtcore.core.session.session import Session
from rtcore.observe import NO_CLOSE, Closed, Connected, FlushPass, NullObserver, Observer, Observers
from rtcore.observe import log_config as logs
from rtcore.observe.logs import LogObserver

NOW = 1_700_000_000.0
MONO = 5_000.0
"""Monotonic time: far from NOW, so a mixed-up clock shows."""


class Recorder:
    """A fake observer: records every call as a tuple."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def connected(self, event: Connected) -> None:
        self.calls.append(("connected", event))

    def closed(self, event: Closed) -> None:
        self.calls.append(("closed", event))

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        self.calls.append(("refused", conn, app, code, operation))

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        self.calls.append(("rate_limited", conn, app, limiter, operation))

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        self.calls.append(("slow_consumer", conn, remote, queued))

    def flush_pass(self, event: FlushPass) -> None:
        self.calls.append(("flush_pass", event))


def member(name: str) -> Member:
    return Member(name, None, None, Outbox())


# -- app statistics -----------------------------------------------------------------------------


def test_an_app_counts_publications_and_their_recipients_not_deliveries_one_by_one() -> None:
    app = App(AppConfig("a"), Pending(), MessageIds("n"))
    members = [member(f"m{i}") for i in range(3)]
    for m in members:
        app.connect(m)
        app.join(m, "room", echo=True)  # member_join to 1, then 2, then 3 members
    app.send("room", "e", 1, wall=NOW)  # 3 recipients
    app.send("room", "e", 2, wall=NOW, sender=members[0], echo=False)  # 2
    app.broadcast("e", 3, wall=NOW)  # 3
    app.send("nobody-here", "e", 4, wall=NOW)  # 0
    app.publish_user_event("nobody", "signin", None, None, MONO, NOW)  # 0
    stats = app.statistics
    assert stats.messages == 4
    assert stats.message_deliveries == 3 + 2 + 3
    assert stats.presence_deliveries == 1 + 2 + 3
    assert stats.user_event_deliveries == 0
    app.disconnect(members[2])  # member_leave to the other 2
    assert stats.presence_deliveries == 1 + 2 + 3 + 2
    # Every byte queued went to an outbox: counted once per publication, not per member.
    queued = sum(len(item) for m in members for item in m.outbox.items)
    assert stats.bytes_queued == queued > 0


def test_replies_and_pings_are_counted_as_they_are_pushed() -> None:
    pending = Pending()
    one, two = Outbox(), Outbox()
    pending.push(one, b"x" * 10)
    pending.push(two, b"y" * 7)
    pending.push(one, b"z")
    assert pending.bytes_pushed == 18


def test_user_event_deliveries_count_the_users_connections() -> None:
    app = App(AppConfig("a"), Pending(), MessageIds("n"))
    for name in ("c1", "c2"):
        app.connect(Member(name, "u1", None, Outbox()))
    app.publish_user_event("u1", "signin", None, None, MONO, NOW)
    assert app.statistics.user_event_deliveries == 2
    queued = sum(len(item) for m in app.table.everyone.values() for item in m.outbox.items)
    assert app.statistics.bytes_queued == queued > 0  # its bytes are counted too


def test_with_a_shared_broker_deliveries_are_counted_where_they_happen() -> None:
    from rtcore.engines.base import Publication, Target
    from tests.unit.test_broker import SharedBroker

    app = App(AppConfig("a"), Pending(), MessageIds("n"), SharedBroker())
    members = [member(f"m{i}") for i in range(2)]
    for m in members:
        app.connect(m)
        app.table.join(m, "room")
    app.send("room", "e", 1, wall=NOW)  # published: the broker delivers it (the fake: here)
    stats = app.statistics
    assert (stats.messages, stats.message_deliveries, stats.bytes_queued) == (1, 0, 0)
    # What comes back from the broker -- this node's message or another's -- is counted.
    app.deliver_published(Publication("a", Target.CHANNEL, "room", b"x" * 10))
    assert (stats.messages, stats.message_deliveries, stats.bytes_queued) == (1, 2, 20)


# -- refusals, reported by the session through the app -------------------------------------------


def world(app: AppConfig) -> tuple[Session, App, Recorder]:
    config = Config(apps=(app,), default_app=app.name)
    recorder = Recorder()
    apps = {app.name: App(app, Pending(), MessageIds("n"), observer=recorder)}
    session = Session("c1", apps, config, Pending(), remote="10.0.0.1")
    assert session.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW) is None
    return session, apps[app.name], recorder


def request(session: Session, **frame: Any) -> None:
    assert session.receive(msgpack.packb(frame), MONO, NOW) is None


def test_a_refused_request_is_counted_by_code_and_reported_with_its_operation() -> None:
    session, app, recorder = world(AppConfig("a"))
    request(session, t="send", id=1, ch="room", ev="e", data=1)  # not a member
    request(session, t="join", id=2, ch="bad name!")
    request(session, t="join", id=3, ch="room")  # fine: not a refusal
    assert recorder.calls == [
        ("refused", "c1", "a", "not_member", "send"),
        ("refused", "c1", "a", "invalid_channel", "join"),
    ]
    assert app.statistics.refusals == {"not_member": 1, "invalid_channel": 1}


def test_a_rate_limited_request_is_counted_by_limiter_and_as_a_refusal() -> None:
    rule = Rule("joins", 1, 3600, scope="connection", operations=frozenset({"join"}))
    session, app, recorder = world(AppConfig("a", rate_limits=(rule,)))
    request(session, t="join", id=1, ch="one")
    request(session, t="join", id=2, ch="two")  # refused by "joins"
    assert recorder.calls == [("rate_limited", "c1", "a", "joins", "join")]
    assert app.statistics.rate_limited == {"joins": 1}
    assert app.statistics.refusals == {"rate_limited": 1}


def test_a_rate_limit_that_closes_the_client_is_not_counted_as_an_error_reply() -> None:
    rule = Rule("joins", 1, 3600, scope="connection", operations=frozenset({"join"}))
    session, app, recorder = world(
        AppConfig("a", rate_limits=(rule,), refusals_before_disconnect=0)
    )
    request(session, t="join", id=1, ch="one")
    close = session.receive(msgpack.packb({"t": "join", "id": 2, "ch": "two"}), MONO, NOW)
    assert close is not None  # closed (4030), no err reply
    assert app.statistics.rate_limited == {"joins": 1}
    assert app.statistics.refusals == {}
    assert recorder.calls == [("rate_limited", "c1", "a", "joins", "join")]


# -- observers ------------------------------------------------------------------------------------


def test_observers_hand_every_event_to_each_observer_in_order() -> None:
    one, two = Recorder(), Recorder()
    fan: Observer = Observers([one, NullObserver(), two])
    opened = Connected("c1", "10.0.0.1", "a", None)
    ended = Closed("c1", "10.0.0.1", "a", 1000, "bye", 1.5)
    passed = FlushPass(0.001, 2, 0.002)
    fan.connected(opened)
    fan.closed(ended)
    fan.refused("c1", "a", "forbidden", "join")
    fan.rate_limited("c1", "a", "sends", "send")
    fan.slow_consumer("c1", "10.0.0.1", 99)
    fan.flush_pass(passed)
    expected = [
        ("connected", opened),
        ("closed", ended),
        ("refused", "c1", "a", "forbidden", "join"),
        ("rate_limited", "c1", "a", "sends", "send"),
        ("slow_consumer", "c1", "10.0.0.1", 99),
        ("flush_pass", passed),
    ]
    assert one.calls == expected
    assert two.calls == expected


# -- the log observer -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connection_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rtcore.connections"]


def test_connection_lines_are_rate_limited_then_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    observer = LogObserver(per_second=2, clock=clock)
    for i in range(5):
        observer.connected(Connected(f"c{i}", "10.0.0.1", "a", None))
    assert [r.getMessage() for r in connection_lines(caplog)] == [
        "connection c0 open: app a, user None, from 10.0.0.1",
        "connection c1 open: app a, user None, from 10.0.0.1",
    ]
    assert observer.suppressed == 3
    clock.now += 0.5
    observer.flush_pass(FlushPass(0.0, 0, None))  # still the same second: no summary
    assert len(connection_lines(caplog)) == 2
    clock.now += 0.6
    observer.flush_pass(FlushPass(0.0, 0, None))  # a new second: the summary
    summary = connection_lines(caplog)[-1]
    assert summary.getMessage() == "suppressed 3 connection logs (over 2 per second)"
    assert observer.suppressed == 0
    observer.closed(Closed("c0", "10.0.0.1", "a", 1000, "bye", 2.25))
    closed = connection_lines(caplog)[-1]
    expected = "connection c0 closed: 1000 (bye) after 2.250 s (app a, from 10.0.0.1)"
    assert closed.getMessage() == expected
    assert (closed.conn, closed.code, closed.duration) == ("c0", 1000, 2.25)  # type: ignore[attr-defined]


def test_a_connection_without_a_websocket_is_a_debug_line_not_an_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21: each of the demo's static files logged "connection closed: none" at INFO."""
    caplog.set_level(logging.INFO)
    LogObserver().closed(Closed("c9", "10.0.0.1", None, NO_CLOSE, "no WebSocket", 0.01))
    assert connection_lines(caplog) == []
    caplog.set_level(logging.DEBUG)
    LogObserver().closed(Closed("c9", "10.0.0.1", None, NO_CLOSE, "no WebSocket", 0.01))
    (line,) = connection_lines(caplog)
    assert line.levelno == logging.DEBUG
    assert line.getMessage().startswith("connection c9 ended without a WebSocket")


def test_refusals_are_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    observer = LogObserver()
    caplog.set_level(logging.INFO)
    observer.refused("c1", "a", "forbidden", "join")
    assert not [r for r in caplog.records if r.name == "rtcore.refusals"]
    caplog.set_level(logging.DEBUG)
    observer.refused("c1", "a", "forbidden", "join")
    observer.rate_limited("c1", "a", "sends", "send")
    lines = [r for r in caplog.records if r.name == "rtcore.refusals"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.DEBUG, "connection c1: join refused in app a: forbidden"),
        (logging.DEBUG, "connection c1: send rate-limited in app a by limiter sends"),
    ]


# -- the JSON log format --------------------------------------------------------------------------


def test_json_lines_carry_the_standard_keys_the_extra_fields_and_the_traceback() -> None:
    stream = io.StringIO()
    logs.configure("DEBUG", "json", stream)
    try:
        log = logging.getLogger("rtcore.test")
        log.info("closed %s", "c1", extra={"conn": "c1", "code": 1000, "duration": 0.5})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.keys() == {"ts", "level", "logger", "msg", "conn", "code", "duration"}
    assert (first["level"], first["logger"], first["msg"]) == ("INFO", "rtcore.test", "closed c1")
    assert (first["conn"], first["code"], first["duration"]) == ("c1", 1000, 0.5)
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["exc"] and "Traceback" in second["exc"]


def test_configure_refuses_an_unknown_level_or_format() -> None:
    with pytest.raises(ValueError):
        logs.configure("LOUD", "text")
    with pytest.raises(ValueError):
        logs.configure("INFO", "xml")


# -- histograms -----------------------------------------------------------------------------------


def test_buckets_count_each_value_under_the_first_bound_it_does_not_exceed() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from rtcore.observe.metrics import Buckets

    histogram = Buckets("t_seconds", "a test", (1.0, 2.0, 5.0))
    for v in (0.5, 1.0, 1.5, 2.0, 4.0, 9.0):
        histogram.observe(v)

    class One:
        def collect(self) -> Any:
            yield histogram.family()

    registry = CollectorRegistry()
    registry.register(One())
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert family.type == "histogram"
    assert samples[("t_seconds_bucket", "1.0")] == 2  # 0.5 and 1.0: le is inclusive
    assert samples[("t_seconds_bucket", "2.0")] == 4
    assert samples[("t_seconds_bucket", "5.0")] == 5
    assert samples[("t_seconds_bucket", "+Inf")] == 6
    assert samples[("t_seconds_count", None)] == 6
    assert samples[("t_seconds_sum", None)] == 18.0


def test_coredis_lines_from_outside_an_exception_carry_no_stray_traceback() -> None:
    """coredis logs `exc_info=True` in a finally block when Redis drops; the line must not be
    followed by "NoneType: None" (issue 21)."""
    import io

    from coredis._utils import logger as coredis_logger

    import rtcore.engines.redis.connect  # noqa: F401  (installs the filter)

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    coredis_logger.addHandler(handler)
    level = coredis_logger.level
    coredis_logger.setLevel(logging.INFO)
    try:
        coredis_logger.info("Connection closed unexpectedly!", exc_info=True)
        try:
            raise ConnectionError("real")
        except ConnectionError:
            coredis_logger.info("with a real exception", exc_info=True)
    finally:
        coredis_logger.removeHandler(handler)
        coredis_logger.setLevel(level)
    text = out.getvalue()
    assert "Connection closed unexpectedly!" in text and "NoneType: None" not in text
    assert "ConnectionError: real" in text  # a real traceback is kept


def test_connection_lines_in_json_have_the_keys_the_readme_lists() -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        observer = LogObserver()
        observer.connected(Connected("c1", "10.0.0.1", "chat", None))
        observer.closed(Closed("c1", "10.0.0.1", "chat", 1000, "bye", 1.5))
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    opened, closed = (json.loads(line) for line in stream.getvalue().splitlines())
    base = {"ts", "level", "logger", "msg"}
    assert opened.keys() == base | {"conn", "app", "user", "remote"}
    assert closed.keys() == base | {"conn", "app", "remote", "code", "reason", "duration"}
    assert (opened["logger"], opened["user"]) == ("rtcore.connections", None)
    assert (closed["code"], closed["reason"], closed["duration"]) == (1000, "bye", 1.5)
