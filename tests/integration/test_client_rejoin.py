"""The client keeps its channels through a rejoin that is refused or unanswered (issue 24,
bugs 3 and 4): it retries with backoff, tells ``on_error`` and iterators, and is never left
connected but not ready. Against a scripted server (fake_ws.py) on trio's autojump clock."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from wsproto.events import BytesMessage, CloseConnection

from rtcore.client import (
    ChannelTokenError,
    Client,
    Connected,
    Rejoining,
    RequestError,
    RequestTimeout,
)
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from tests.integration.fake_ws import Peer, serve_fake


async def next_request(peer: Peer) -> Any:
    while True:
        event = await peer.next_event()
        if isinstance(event, BytesMessage):
            return codec.decode(bytes(event.data), allowed=codec.CLIENT_TYPES)
        if isinstance(event, CloseConnection):  # the client closed
            return None


def script(second_reply: str, joins: list[tuple[int, str]]) -> Any:
    """Connection 1: the join is answered ok, then the server goes away (1011). Connection 2:
    its first join (the rejoin) is answered ``second_reply`` (an err code, or "silence":
    never), later ones ok; every other request is answered ok."""
    connections = 0

    async def run(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        number = connections
        while True:
            request = await next_request(peer)
            if request is None:
                return
            if not isinstance(request, f.Join):
                if isinstance(request, f.Send):
                    joins.append((number, f"send {request.channel}"))
                await peer.send_frame(f.Ok(request.id, {"mid": "m", "ts": 0, "recipients": 1}))
                continue
            joins.append((number, request.channel))
            if number == 1:
                await peer.send_frame(f.Ok(request.id, {"joined": True}))
                await peer.send(CloseConnection(1011, "going"))
                return
            if len(joins) > 2:
                await peer.send_frame(f.Ok(request.id, {"joined": True}))
            elif second_reply != "silence":
                await peer.send_frame(f.Err(request.id, second_reply, "Redis is unreachable"))

    return run


async def _rejoin_through(second_reply: str, nursery: trio.Nursery) -> list[Any]:
    joins: list[tuple[int, str]] = []
    port = await nursery.start(serve_fake, script(second_reply, joins))
    errors: list[Exception] = []
    client = Client(f"ws://127.0.0.1:{port}/", request_timeout=5.0, backoff_initial=0.5)
    client.on_error(errors.append)
    rejoining: list[Rejoining] = []
    sent: list[Any] = []

    async def send_now() -> None:  # while the rejoin is being retried: it waits for it
        sent.append(await client.send("feed", "e"))

    async def watch() -> None:
        async for event in client.events():
            if isinstance(event, Rejoining):
                rejoining.append(event)
                nursery.start_soon(send_now)

    with trio.fail_after(120):
        nursery.start_soon(watch)
        await client.open(nursery)
        await client.join("feed")
        while len(joins) < 4:  # noqa: ASYNC110 (the retry's join; on the mock clock)
            await trio.sleep(0.1)
        # kept and joined again; the send made meanwhile went after the rejoin
        assert joins == [(1, "feed"), (2, "feed"), (2, "feed"), (2, "send feed")]
        assert sent == [{"mid": "m", "ts": 0, "recipients": 1}]
        assert await client.broadcast("e") == {"mid": "m", "ts": 0, "recipients": 1}
        assert client.is_connected()
        reason = "request_timeout" if second_reply == "silence" else second_reply
        assert rejoining == [Rejoining("feed", reason, 1)]
        await client.aclose()
    return errors


async def test_a_rejoin_refused_broker_unavailable_keeps_the_channel(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    errors = await _rejoin_through("broker_unavailable", nursery)
    assert [type(e) for e in errors] == [RequestError]
    assert isinstance(errors[0], RequestError) and errors[0].retry_safe


async def test_a_rejoin_without_reply_is_retried_and_the_client_gets_ready(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    errors = await _rejoin_through("silence", nursery)
    assert [type(e) for e in errors] == [RequestTimeout]


async def test_a_rejoin_refused_for_good_drops_the_channel(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    joins: list[tuple[int, str]] = []
    connections = 0

    async def run(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        join = await next_request(peer)
        assert isinstance(join, f.Join), join
        joins.append((connections, join.channel))
        if connections == 1:
            await peer.send_frame(f.Ok(join.id, {"joined": True}))
            await peer.send(CloseConnection(1011, "going"))
            return
        await peer.send_frame(f.Err(join.id, "forbidden", "not any more"))
        request = await next_request(peer)  # no second join: the next request is ours
        assert isinstance(request, f.Broadcast), request
        await peer.send_frame(f.Ok(request.id, {"mid": "m", "ts": 0, "recipients": 1}))

    port = await nursery.start(serve_fake, run)
    errors: list[Exception] = []
    client = Client(f"ws://127.0.0.1:{port}/", backoff_initial=0.5)
    client.on_error(errors.append)
    with trio.fail_after(60):
        events = client.events()
        await client.open(nursery)
        await client.join("feed")
        async for event in events:
            if isinstance(event, Connected) and event.reconnected:
                break
        assert (await client.broadcast("e"))["recipients"] == 1
        assert joins == [(1, "feed"), (2, "feed")]
        assert [getattr(e, "code", None) for e in errors] == ["forbidden"]
        assert not errors[0].retry_safe  # type: ignore[attr-defined]
        await client.aclose()


async def test_a_failing_channel_token_provider_keeps_the_channel_and_is_asked_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A rejoin asks the provider as a join does; when it raises, the channel is kept, the
    failure goes to on_error and iterators, and the next try asks again (never stuck)."""
    joins: list[tuple[int, str | None]] = []
    connections = 0

    async def run(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        number = connections
        while (request := await next_request(peer)) is not None:
            if isinstance(request, f.Join):
                joins.append((number, request.token))
            await peer.send_frame(f.Ok(request.id, {"joined": True}))
            if number == 1:
                await peer.send(CloseConnection(1011, "going"))
                return

    asked: list[str] = []

    def provider(channel: str) -> str:
        asked.append(channel)
        if len(asked) == 2:
            raise RuntimeError("the backend is down")
        return f"token-{len(asked)}"

    port = await nursery.start(serve_fake, run)
    errors: list[Exception] = []
    client = Client(f"ws://127.0.0.1:{port}/", backoff_initial=0.5, channel_token=provider)
    client.on_error(errors.append)
    rejoining: list[Rejoining] = []

    async def watch() -> None:
        async for event in client.events():
            if isinstance(event, Rejoining):
                rejoining.append(event)

    with trio.fail_after(60):
        nursery.start_soon(watch)
        await client.open(nursery)
        await client.join("room:1")
        while len(joins) < 2:  # noqa: ASYNC110 (the retried rejoin; on the mock clock)
            await trio.sleep(0.1)
        assert joins == [(1, "token-1"), (2, "token-3")]
        assert rejoining == [Rejoining("room:1", "channel_token_unavailable", 1)]
        assert [type(e) for e in errors] == [ChannelTokenError]
        assert client.is_connected() and client.channels == {"room:1": None}
        await client.aclose()
