"""What a session holds on to: the outbound budget for its replies, limiter buckets (sans-IO)."""

from __future__ import annotations

import msgpack

from rtcore.config import AppConfig, Limits
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, ok, take

BUDGET = 200_000


def queued(s: Session) -> int:
    return sum(map(len, s.outbox.items))


def crowded_world() -> tuple[World, Session]:
    """40 members with ~1 KB profiles in "big" (a page of them is ~42 KB); and a lister."""
    world = World(Limits(outbound_buffer_bytes=BUDGET))
    for i in range(40):
        ok(world.session({"profile": {"bio": f"{i}" * 1000}}), t="join", id=1, ch="big")
    return world, world.session()


def test_a_pipelined_burst_of_members_requests_is_bounded_by_the_outbound_budget() -> None:
    world, lister = crowded_world()
    world.pending.take()  # a flush pass: everything so far was written
    request = msgpack.packb({"t": "members", "id": 1, "ch": "big", "limit": 1000})
    largest, close = 0, None
    for _ in range(200):  # one pipelined burst, handled before the next flush pass
        before = queued(lister)
        close = lister.receive(request, MONO, NOW)
        largest = max(largest, queued(lister) - before)
        assert queued(lister) <= BUDGET
        if close is not None:
            break
    assert close is not None and close.code == CloseCode.SLOW_CONSUMER
    assert str(BUDGET) in close.reason
    assert 40_000 < largest and queued(lister) > BUDGET - largest  # replies filled the budget
    replies = take(lister)
    assert len(replies) == BUDGET // largest and all(isinstance(r, f.Ok) for r in replies)


def test_the_reply_budget_counts_per_flush_pass() -> None:
    world, lister = crowded_world()
    request = msgpack.packb({"t": "members", "id": 1, "ch": "big", "limit": 1000})
    for _ in range(20):  # 20 pages of ~42 KB, far beyond the budget in total...
        world.pending.take()  # ...but each flush pass wrote what the previous ones queued
        lister.outbox.items.clear()
        assert lister.receive(request, MONO, NOW) is None
        assert isinstance(take(lister)[-1], f.Ok)


def test_what_the_socket_did_not_take_counts_against_the_reply_budget() -> None:
    world, lister = crowded_world()
    world.pending.take()
    lister.outbox.items[:] = [memoryview(b"x" * (BUDGET - 5000))]  # a flush pass left this
    request = msgpack.packb({"t": "members", "id": 1, "ch": "big", "limit": 1})
    assert lister.receive(request, MONO, NOW) is None  # a small reply still fits...
    request = msgpack.packb({"t": "members", "id": 2, "ch": "big", "limit": 1000})
    close = lister.receive(request, MONO, NOW)  # ...a page does not
    assert close is not None and close.code == CloseCode.SLOW_CONSUMER
    assert queued(lister) <= BUDGET


def test_connection_scoped_buckets_are_freed_when_connections_end() -> None:
    app = AppConfig(
        "a", rate_limits=(Rule("per-ip", 1000, 1), Rule("per-conn", 5, 60, scope="connection"))
    )
    world = World(apps=(app,))
    limiter = world.apps["a"].limiter
    for _ in range(50):  # connections come, make a request, go
        s = world.session()
        ok(s, t="members", id=1, ch="x")
        s.disconnected()
    assert [key for key in limiter._buckets if key[0] == "per-conn"] == []
    assert list(limiter._buckets) == [("per-ip", "ip:10.0.0.1")]  # the client's stays
