"""Webhooks against a real HTTP receiver started by the test: signed batches of events with
ids and times, retried after failures (the same ids again: receivers de-duplicate), dropped
and counted past the queue bound without holding up realtime traffic; with the Redis broker,
one event per cluster transition whichever node made it."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio

from rtcore import Server
from rtcore.config import AppConfig, BrokerConfig
from rtcore.config.hook_settings import WebhookConfig
from rtcore.core.auth import SessionSettings
from tests.integration.conftest import StartServer
from tests.integration.hookbackend import SECRET, Backend, Reply, ok
from tests.integration.raw import RawClient

KEY = "w" * 32


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": 4_000_000_000}, KEY, "HS256")


@pytest.fixture
async def backend(nursery: trio.Nursery) -> Backend:
    b = Backend()
    b.routes["/events"] = lambda p, body: ok({})
    await nursery.start(b.serve)
    return b


def app(backend: Backend, **settings: Any) -> AppConfig:
    hook = WebhookConfig(url=f"{backend.url}/events", secret=SECRET, **settings)
    return AppConfig("a", session=SessionSettings(key=KEY), webhooks=(hook,))


def events(backend: Backend) -> list[dict[str, Any]]:
    return [e for body in backend.bodies("/events") for e in body["events"]]


async def arrival(backend: Backend, done: Any, what: str) -> None:
    """Wait (bounded) until ``done(events)`` holds, a request at a time."""
    for _ in range(100):
        if done(events(backend)):
            return
        await backend.arrived.wait()
    raise AssertionError(f"never received {what}")


async def joined(raw: RawClient, rid: int, channel: str, t: str = "join") -> None:
    await raw.send(t=t, id=rid, ch=channel)
    for _ in range(100):
        frame = await raw.recv()
        if getattr(frame, "id", None) == rid:
            assert frame.TYPE == "ok", frame
            return
    raise AssertionError("no reply")


async def test_events_arrive_signed_batched_with_ids_and_times(
    start_server: StartServer, backend: Backend
) -> None:
    server = await start_server(apps=(app(backend, channels=("chat-*",)),))
    with trio.fail_after(20):
        first = await RawClient.connect(server.addresses[0])
        await first.hello(token=token("alice"))
        second = await RawClient.connect(server.addresses[0])
        await second.hello(token=token("alice"))
        await joined(first, 1, "chat-1")
        await joined(second, 1, "chat-1")  # the same user again: no member_added
        await first.send(t="send", id=2, ch="chat-1", ev="said", data={"x": 1})
        await joined(first, 3, "chat-1", t="leave")
        await joined(second, 3, "chat-1", t="leave")
        await first.close()
        await first.closed()

        def complete(evs: list[dict[str, Any]]) -> bool:
            return any(e["name"] == "connection_closed" for e in evs)

        await arrival(backend, complete, "connection_closed")
    got = events(backend)
    assert [(e["name"], e.get("channel"), e.get("user")) for e in got] == [
        ("connection_opened", None, "alice"),
        ("connection_opened", None, "alice"),
        ("channel_occupied", "chat-1", None),
        ("member_added", "chat-1", "alice"),
        ("client_message", "chat-1", "alice"),
        ("member_removed", "chat-1", "alice"),
        ("channel_vacated", "chat-1", None),
        ("connection_closed", None, "alice"),
    ]
    assert got[4]["data"] == {"x": 1} and got[4]["event"] == "said"
    assert len({e["id"] for e in got}) == len(got)
    assert all(isinstance(e["time"], int) and e["time"] > 1_600_000_000_000 for e in got)
    assert all(s.signed for s in backend.seen)
    assert all(body["app"] == "a" for body in backend.bodies("/events"))
    assert len(backend.seen) < len(got)  # batched: fewer requests than events


async def test_failed_deliveries_are_retried_with_the_same_ids(
    start_server: StartServer, backend: Backend, autojump_clock: trio.testing.MockClock
) -> None:
    answers = iter([Reply(500, b"busy"), Reply(drop=True), ok({})])
    backend.routes["/events"] = lambda p, body: next(answers)
    server = await start_server(apps=(app(backend, events=("channel_occupied",)),))
    endpoint = next(iter(server.integrations.endpoints.values()))
    with trio.fail_after(120):
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()
        await joined(raw, 1, "room-1")
        await joined(raw, 2, "room-2")
        for _ in range(600):  # virtual seconds: the backoff runs on the autojump clock
            if endpoint.statistics.delivered:
                break
            await trio.sleep(0.1)
    bodies = backend.bodies("/events")
    assert len(bodies) == 3
    ids = [[e["id"] for e in body["events"]] for body in bodies]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 2
    assert (endpoint.statistics.retries, endpoint.statistics.delivered) == (2, 2)
    assert len({e["id"] for body in bodies for e in body["events"]}) == 2  # de-duplicated


async def test_past_the_queue_bound_events_are_dropped_and_counted_not_waited_for(
    start_server: StartServer, backend: Backend
) -> None:
    release = trio.Event()
    backend.routes["/events"] = lambda p, body: Reply(200, b"{}", hang=release)
    settings = app(backend, events=("channel_occupied",), queue_size=3, timeout=600.0)
    server = await start_server(apps=(settings,))
    endpoint = next(iter(server.integrations.endpoints.values()))
    with trio.fail_after(20):
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()
        arrived = backend.arrived
        await joined(raw, 1, "room-0")
        await arrived.wait()  # the sender holds room-0's batch: the backend hangs
        for i in range(1, 11):  # every join answered at once while the receiver hangs
            await joined(raw, i + 1, f"room-{i}")
        assert len(endpoint.queue) == 3 and endpoint.queue.dropped == 7
        metrics = server.metrics
        assert metrics is not None
        text = metrics.exposition().decode()
        assert 'rtcore_webhook_dropped_total{app="a"' in text
        release.set()
        await arrival(backend, lambda evs: len(evs) == 4, "the queued events")
    assert [e["channel"] for e in events(backend)] == [f"room-{i}" for i in range(4)]


async def test_two_nodes_over_redis_tell_each_cluster_transition_once(
    start_server: StartServer, backend: Backend, redis_url: str
) -> None:
    settings = app(
        backend, events=("channel_occupied", "channel_vacated", "member_added", "member_removed")
    )
    config = {"broker": BrokerConfig(kind="redis", url=redis_url)}
    a: Server = await start_server(apps=(settings,), config=config)
    b: Server = await start_server(apps=(settings,), config=config)
    with trio.fail_after(30):
        on_a = await RawClient.connect(a.addresses[0])
        await on_a.hello(token=token("alice"))
        on_b = await RawClient.connect(b.addresses[0])
        await on_b.hello(token=token("alice"))
        await joined(on_a, 1, "room")  # occupied, alice added
        await joined(on_b, 1, "room")  # nothing new for the cluster
        await joined(on_b, 2, "room", t="leave")  # nothing: alice is still in on a
        await joined(on_a, 2, "room", t="leave")  # alice removed, vacated
        await joined(on_b, 3, "room")  # occupied again (made on b), alice added
        await joined(on_a, 4, "marker-a")  # each node's events arrive in order:
        await joined(on_b, 4, "marker-b")  # its marker comes after the rest

        def markers(evs: list[dict[str, Any]]) -> bool:
            return {"marker-a", "marker-b"} <= {e["channel"] for e in evs}

        await arrival(backend, markers, "both markers")
    room = [(e["name"], e.get("user")) for e in events(backend) if e["channel"] == "room"]
    assert room == [
        ("channel_occupied", None),
        ("member_added", "alice"),
        ("member_removed", "alice"),
        ("channel_vacated", None),
        ("channel_occupied", None),
        ("member_added", "alice"),
    ]
