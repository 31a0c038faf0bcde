"""Requests whose answer is the cluster's (a shared broker): deferred, then resumed.

A fake shared broker records what the session asks and hands back what a test says; no
trio, no Redis: the session stays sans-IO and makes no coroutine itself.
"""

from __future__ import annotations

from typing import Any

import msgpack

from rtcore.config import AppConfig, Config
from rtcore.core.app import App, MessageIds
from rtcore.core.limits.limiter import Refusal, Rule
from rtcore.core.outbox import Pending
from rtcore.core.session.session import Deferred, Session
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_broker import SharedBroker
from tests.unit.test_session import MONO, NOW, take


class AskingBroker(SharedBroker):
    """A shared broker whose awaitables are recorded, not run."""

    def joined(self, app: str, channel: str, conn: str) -> Any:
        return ("joined", app, channel, conn)

    def members(self, app: str, channel: str, after: int | None, limit: int) -> Any:
        return ("members", app, channel, after, limit)

    def take(self, app: str, client_key: str, rules: list[Rule]) -> Any:
        return ("take", app, client_key, [r.name for r in rules])


def world(**settings: Any) -> tuple[Session, AskingBroker]:
    broker = AskingBroker()
    app = App(AppConfig("a", **settings), Pending(), MessageIds("n"), broker)
    config = Config(apps=(app.settings,), default_app="a")
    session = Session("c1", {"a": app}, config, app._pending, remote="10.0.0.1")
    assert session.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW) is None
    take(session)
    return session, broker


def send(session: Session, **obj: Any) -> None:
    assert session.receive(msgpack.packb(obj), MONO, NOW) is None


def test_a_join_is_answered_once_the_cluster_has_it() -> None:
    session, broker = world()
    send(session, t="join", id=1, ch="room")
    deferred = session.deferred
    assert isinstance(deferred, Deferred) and take(session) == []  # no reply yet
    assert deferred.wait() == ("joined", "a", "room", "c1")
    assert ("presence", "member_join", "room", "c1", None) in broker.calls
    assert session.resume(None, None, MONO, NOW) is None
    assert take(session) == [f.Ok(1, {"joined": True})] and session.deferred is None


def test_a_listing_is_the_brokers_and_a_failure_is_broker_unavailable() -> None:
    session, _ = world()
    send(session, t="members", id=2, ch="room", after=7, limit=2)
    assert session.deferred is not None
    assert session.deferred.wait() == ("members", "a", "room", 7, 2)
    infos = [{"id": "x", "user": None, "data": 1}]
    session.resume((infos, 9), None, MONO, NOW)
    assert take(session) == [f.Ok(2, {"members": infos, "next": 9})]
    send(session, t="members", id=3, ch="room")
    session.resume(None, "Redis is unreachable", MONO, NOW)
    [reply] = take(session)
    assert isinstance(reply, f.Err) and reply.code == ErrorCode.BROKER_UNAVAILABLE.value
    assert reply.id == 3 and "unreachable" in reply.message


def test_a_shared_limit_is_taken_in_the_cluster_then_the_request_runs() -> None:
    rules = (
        Rule("user", 5, 60.0, scope="client", operations=frozenset({"send"})),
        Rule("conn", 1, 60.0, scope="connection", operations=frozenset({"send"})),
    )
    session, broker = world(rate_limits=rules)
    send(session, t="join", id=1, ch="room")
    session.resume(None, None, MONO, NOW)
    take(session)
    send(session, t="send", id=2, ch="room", ev="e")
    assert session.deferred is not None
    assert session.deferred.wait() == ("take", "a", "ip:10.0.0.1", ["user"])
    session.resume(None, None, MONO, NOW)  # the cluster admitted it
    assert isinstance(take(session)[-1], f.Ok)  # (after its echo: the fake delivers here)
    # The connection's own bucket (1 a minute) is local and now empty: refused at once.
    send(session, t="send", id=3, ch="room", ev="e")
    assert session.deferred is None
    [reply] = take(session)
    assert isinstance(reply, f.Err) and reply.limiter == "conn"


def test_a_cluster_refusal_is_rate_limited_and_charges_nothing_here() -> None:
    rules = (
        Rule("user", 5, 60.0, scope="client", operations=frozenset({"send"})),
        Rule("conn", 1, 60.0, scope="connection", operations=frozenset({"send"})),
    )
    session, _ = world(rate_limits=rules)
    send(session, t="send", id=2, ch="room", ev="e")
    session.resume(Refusal("user", "slow down", 12.0), None, MONO, NOW)
    [reply] = take(session)
    assert isinstance(reply, f.Err) and (reply.limiter, reply.retry_after) == ("user", 12_000)
    # The refused request took nothing from the connection's bucket: the next one is the
    # cluster's to decide again (and not_member, since it never joined).
    send(session, t="send", id=3, ch="room", ev="e")
    assert session.deferred is not None
    session.resume(None, None, MONO, NOW)
    [reply] = take(session)
    assert isinstance(reply, f.Err) and reply.code == ErrorCode.NOT_MEMBER.value


def test_with_redis_away_the_nodes_own_buckets_stand_in() -> None:
    rules = (Rule("user", 1, 60.0, scope="client", operations=frozenset({"send"})),)
    session, _ = world(rate_limits=rules)
    replies = []
    for rid in (2, 3):
        send(session, t="send", id=rid, ch="room", ev="e")
        session.resume(None, "Redis is unreachable", MONO, NOW)
        replies += take(session)
    assert [r.code for r in replies] == [ErrorCode.NOT_MEMBER.value, "rate_limited"]
