"""A refusal means refused (issue 24, bugs 1 and 2): with two nodes over a Redis that stalls
(SIGSTOP), a send answered ``broker_unavailable`` is delivered nowhere and never written to
the stream, and a join answered ``broker_unavailable`` makes no member."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio

from rtcore import Server
from rtcore.backend import AsyncServerAPI, ServerAPIError
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer
from tests.integration.proxy import Proxy
from tests.integration.redisd import RedisProcess
from tests.integration.test_redis_nodes import (
    HISTORY,
    SERVER_SECRET,
    api_url,
    broker,
    client,
    pushes_until,
    request,
    tracked,
    until,
)

pytestmark = pytest.mark.slow

STALL = 2.0
"""Seconds Redis is stopped: longer than the nodes' command_timeout (0.5 s)."""


async def short_timeout_nodes(start_server: StartServer, url: str, app: Any) -> list[Server]:
    options = {"command_timeout": 0.5, "connect_timeout": 0.5}
    return [
        await start_server(apps=(app,), config={"broker": broker(url, **options)}) for _ in "ab"
    ]


def signal_redis(redis: RedisProcess, sig: signal.Signals) -> None:
    assert redis.proc is not None
    os.kill(redis.proc.pid, sig)


async def resume_after(redis: RedisProcess, seconds: float) -> None:
    await trio.sleep(seconds)  # the fault's length, not a wait for the server
    signal_redis(redis, signal.SIGCONT)


async def both_up(*servers: Server) -> None:
    await until(lambda: all(s.broker.health() is None for s in servers), "both nodes on Redis")


async def accepted_after(a: Server, b: Server, clients: list[Any]) -> None:
    """Once both nodes are back on Redis, a send is accepted as the stream's first message
    (the refused ones were never written), and it is the first message every one gets."""
    await both_up(a, b)
    after = await request(clients[0], "send", 3, ch="feed", ev="after", data=1)
    assert isinstance(after, f.Ok), after
    for raw in clients:
        got = await pushes_until(raw, lambda fr: isinstance(fr, f.Msg))
        assert got[-1].event == "after", got
    assert after.data["offset"] == 1
    page = await request(clients[-1], "history", 4, ch="feed")
    assert [m["ev"] for m in page.data["messages"]] == ["after"]


async def joined_feed(start_server: StartServer, redis: RedisProcess) -> Any:
    a, b = await short_timeout_nodes(start_server, redis.url, HISTORY)
    ann, cat = tracked(await client(a)), tracked(await client(a))
    bob = tracked(await client(b))
    for raw in (ann, cat, bob):
        assert isinstance(await request(raw, "join", 1, ch="feed"), f.Ok)
    return a, b, ann, cat, bob


async def test_a_send_refused_in_a_redis_stall_is_delivered_nowhere_and_not_stored(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    with trio.fail_after(60):
        a, b, ann, cat, bob = await joined_feed(start_server, redis_server)
        signal_redis(redis_server, signal.SIGSTOP)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume_after, redis_server, STALL)
            # on its way when Redis stalled: settled once Redis is back
            in_flight = await request(ann, "send", 2, ch="feed", ev="refused", data="ann")
        assert isinstance(in_flight, f.Err), in_flight
        await accepted_after(a, b, [ann, cat, bob])
        assert in_flight.code == "broker_unavailable", in_flight


async def test_a_send_while_the_node_has_no_redis_is_refused_and_delivered_nowhere(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    with trio.fail_after(60):
        a, b, ann, cat, bob = await joined_feed(start_server, redis_server)
        signal_redis(redis_server, signal.SIGSTOP)
        try:
            await until(lambda: a.broker.health() is not None, "node A to notice")
            away = await request(cat, "send", 2, ch="feed", ev="refused", data="cat")
            async with AsyncServerAPI(api_url(a), "default", SERVER_SECRET) as backend:
                with pytest.raises(ServerAPIError) as refused:  # the server API's send too
                    await backend.send("feed", "refused", "api")
            refused_by_api = refused.value
        finally:
            signal_redis(redis_server, signal.SIGCONT)
        assert isinstance(away, f.Err) and away.code == "broker_unavailable", away
        assert refused_by_api.status == 503 and refused_by_api.code == "broker_unavailable"
        await accepted_after(a, b, [ann, cat, bob])


async def test_a_join_refused_broker_unavailable_makes_no_member(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    with trio.fail_after(60):
        a, b = await short_timeout_nodes(start_server, redis_server.url, "default")
        ann, cat = tracked(await client(a, profile="ann")), tracked(await client(a, profile="cat"))
        bob = tracked(await client(b, profile="bob"))
        for raw in (ann, bob):
            assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
        signal_redis(redis_server, signal.SIGSTOP)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume_after, redis_server, STALL)
            refused = await request(cat, "join", 2, ch="room")
        assert isinstance(refused, f.Err) and refused.code == "broker_unavailable", refused
        await both_up(a, b)

        async def listed() -> list[str]:
            listing = await request(bob, "members", 3, ch="room")
            assert isinstance(listing, f.Ok), listing
            return sorted(m["data"] for m in listing.data["members"])

        for _ in range(60):  # the cluster converges to ann and bob (its late write refused)
            if await listed() == ["ann", "bob"]:
                break
            await trio.sleep(0.05)
        assert await listed() == ["ann", "bob"]
        assert a.apps["default"].table.members("room").keys() == {ann_id(a, "ann")}
        sent = await request(bob, "send", 4, ch="room", ev="hi", data=1)
        assert isinstance(sent, f.Ok)
        await pushes_until(ann, lambda fr: isinstance(fr, f.Msg))  # node A delivered it
        barrier = await request(cat, "members", 5, ch="room")  # after anything queued for cat
        assert isinstance(barrier, f.Ok)
        assert not [p for p in cat.pushes if isinstance(p, f.Msg)], cat.pushes


def ann_id(server: Server, name: str) -> str:
    members = server.apps["default"].table.members("room")
    return next(m for m, member in members.items() if member.profile == name)


async def test_messages_a_cut_off_node_delivered_alone_are_signalled_as_gaps_everywhere(
    start_server: StartServer, redis_server: RedisProcess, nursery: trio.Nursery
) -> None:
    """A channel without history: node A, cut off from Redis (its link through a proxy),
    goes on delivering its members' messages locally. When A is back, node B's members are
    told they missed some (a ``gap`` from A), and A's members are told too (B's messages did
    not reach them): nothing is missed silently."""
    proxy = Proxy(("127.0.0.1", redis_server.port))
    await nursery.start(proxy.serve)
    host, port = proxy.address
    options = {"command_timeout": 0.5, "connect_timeout": 0.5}
    with trio.fail_after(60):
        a = await start_server(config={"broker": broker(f"redis://{host}:{port}/0", **options)})
        b = await start_server(config={"broker": broker(redis_server.url, **options)})
        ann, bob = tracked(await client(a)), tracked(await client(b))
        for raw in (ann, bob):
            assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
        proxy.refusing = True
        proxy.cut()
        await until(lambda: a.broker.health() is not None, "node A to be cut off")
        local = await request(ann, "send", 2, ch="room", ev="local", data=1)
        assert isinstance(local, f.Ok) and local.data["recipients"] == 1  # ann's echo
        assert isinstance(await request(bob, "send", 2, ch="room", ev="remote", data=2), f.Ok)
        proxy.refusing = False
        await both_up(a, b)
        told = await pushes_until(bob, lambda fr: isinstance(fr, f.Gap))
        assert told[-1] == f.Gap("room", "broker_outage")
        assert not [m for m in told if isinstance(m, f.Msg) and m.event == "local"]
        gaps: set[Any] = set()
        while gaps != {None, "room"}:
            pushed = await pushes_until(ann, lambda fr: isinstance(fr, f.Gap))
            assert not [m for m in pushed if isinstance(m, f.Msg) and m.event == "remote"]
            gaps.add(pushed[-1].channel)


async def test_the_new_epochs_first_messages_reach_the_node_that_reconnects_second(
    start_server: StartServer, redis_server: RedisProcess, nursery: trio.Nursery
) -> None:
    """Redis restarted without persistence: node A is back first and its member publishes
    the new stream's first messages; node B, back later, delivers them to its member too
    (from offset 1), not only what follows (issue 24, finding 6)."""
    proxy = Proxy(("127.0.0.1", redis_server.port))
    await nursery.start(proxy.serve)
    host, port = proxy.address
    options = {"command_timeout": 0.5, "connect_timeout": 0.5}
    with trio.fail_after(60):
        a = await start_server(
            apps=(HISTORY,), config={"broker": broker(redis_server.url, **options)}
        )
        via_proxy = broker(f"redis://{host}:{port}/0", **options)
        b = await start_server(apps=(HISTORY,), config={"broker": via_proxy})
        ann, bob = tracked(await client(a)), tracked(await client(b))
        for raw in (ann, bob):
            assert isinstance(await request(raw, "join", 1, ch="feed"), f.Ok)
        old = await request(ann, "send", 2, ch="feed", ev="old", data=0)
        assert isinstance(old, f.Ok) and old.data["offset"] == 1
        assert (await pushes_until(bob, lambda fr: isinstance(fr, f.Msg)))[-1].event == "old"
        proxy.refusing = True
        redis_server.stop()  # SIGKILL, no persistence: the streams are lost
        proxy.cut()
        await until(lambda: a.broker.health() and b.broker.health(), "both to notice")
        redis_server.start()
        await until(lambda: a.broker.health() is None, "node A back")
        for i in range(3):
            sent = await request(ann, "send", 3 + i, ch="feed", ev="new", data=i)
            assert isinstance(sent, f.Ok) and sent.data["offset"] == i + 1, sent
            assert sent.data["epoch"] != old.data["epoch"]
        proxy.refusing = False
        await until(lambda: b.broker.health() is None, "node B back")
        got = []
        while len(got) < 3:
            frame = await pushes_until(bob, lambda fr: isinstance(fr, f.Msg))
            got.append(frame[-1])
        assert [(m.event, m.data, m.offset) for m in got] == [("new", i, i + 1) for i in range(3)]
        assert {m.epoch for m in got} == {sent.data["epoch"]}
