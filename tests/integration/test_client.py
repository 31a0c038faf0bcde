"""The client library: reconnects, buffering, fail-fast, typed errors, iteration limits."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from rtcore import CloseCode, Server
from rtcore.client import (
    BufferFullError,
    Client,
    Connected,
    ConnectionClosedError,
    ConnectionLostError,
    Disconnected,
    EventOverflowError,
    MemberEvent,
    NotConnectedError,
    RequestError,
    RequestTimeout,
    open_client,
)
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url


async def wait_until(predicate: object) -> None:
    """Poll client state that has no event of its own (bounded by the test's fail_after)."""
    while not predicate():  # type: ignore[operator]  # noqa: ASYNC110
        await trio.sleep(0.005)


async def test_error_replies_raise_request_error_with_the_code(server: Server) -> None:
    with trio.fail_after(10):
        async with open_client(url(server)) as c:
            with pytest.raises(RequestError) as info:
                await c.send("not-joined", "e", 1)
            assert info.value.code == "not_member"
            with pytest.raises(RequestError) as info:
                await c.join("bad name")
            assert info.value.code == "invalid_channel"


async def test_a_fatal_close_on_connect_raises_connection_closed(server: Server) -> None:
    with trio.fail_after(10), pytest.raises(ConnectionClosedError) as info:
        async with open_client(url(server), app="nope"):
            pass
    assert info.value.code == CloseCode.UNKNOWN_APP


async def test_no_server_and_no_reconnect_raises_the_network_error() -> None:
    with trio.fail_after(10), pytest.raises(OSError):
        async with open_client("ws://127.0.0.1:1/", reconnect=False):
            pass


async def test_reconnect_rejoins_channels_with_the_latest_profile(server: Server) -> None:
    with trio.fail_after(10):
        async with (
            open_client(url(server)) as watcher,
            open_client(url(server), profile={"v": 1}, backoff_initial=0.01) as c,
        ):
            attempts: list[int] = []
            connects: list[str] = []
            disconnects: list[tuple[int, str]] = []
            c.on_reconnect_attempt(attempts.append)
            c.on_connect(connects.append)
            c.on_disconnect(lambda code, reason: disconnects.append((code, reason)))
            await watcher.join("room", echo=False)
            await c.join("room")
            await c.update_profile({"v": 2})
            seen = watcher.events()
            old = c.id
            server.connections[old].request_close(CloseCode.INTERNAL_ERROR, "test: drop")  # type: ignore[index]
            await wait_until(lambda: c.is_connected() and c.id != old)
            kinds = []
            async for ev in seen:
                if isinstance(ev, MemberEvent) and ev.kind != "member_update":
                    kinds.append((ev.kind, ev.member["id"], ev.member["data"]))
                if len(kinds) == 2:
                    break
            assert kinds == [("member_leave", old, {"v": 2}), ("member_join", c.id, {"v": 2})]
            assert [m["id"] for m in await watcher.get_members("room")] == [watcher.id, c.id]
            assert attempts == [1] and connects == [c.id]
            assert disconnects == [(CloseCode.INTERNAL_ERROR, "test: drop")]
            assert (await c.send("room", "e", 1))["recipients"] == 2


async def test_requests_wait_for_the_connection_or_fail_fast(start_server: StartServer) -> None:
    first = await start_server()
    port = first.addresses[0][1]
    with trio.fail_after(20):
        async with (
            open_client(
                url(first), backoff_initial=0.05, backoff_max=0.1, buffer_limit=1
            ) as buffered,
            open_client(url(first), fail_fast=True, backoff_initial=0.05, backoff_max=0.1) as fast,
        ):
            await buffered.join("room")
            first.shutdown()
            await wait_until(lambda: not buffered.is_connected() and not fast.is_connected())
            with pytest.raises(NotConnectedError):
                await fast.broadcast("e")
            result: list[int] = []

            async def send_buffered() -> None:
                result.append((await buffered.send("room", "e", "late"))["recipients"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_buffered)
                await wait_until(lambda: buffered._waiting == 1)
                with pytest.raises(BufferFullError):
                    await buffered.send("room", "e", "too many")
                second = await start_server(port=port)  # the server comes back
            assert result == [1]  # sent after the rejoin, so the channel was there again
            assert [m["id"] for m in second.members("default", "room")] == [buffered.id]


async def test_an_iterator_that_falls_behind_raises_overflow(server: Server) -> None:
    with trio.fail_after(10):
        async with open_client(url(server)) as c:
            events = c.events(maxsize=2)
            for i in range(3):
                await c.broadcast("e", i)
            got = []
            with pytest.raises(EventOverflowError):
                async for ev in events:
                    got.append(ev.data)
            assert got == [0, 1]


async def test_iteration_sees_disconnect_and_connect(server: Server) -> None:
    with trio.fail_after(10):
        async with open_client(url(server), backoff_initial=0.01) as c:
            events = c.events()
            server.connections[c.id].request_close(CloseCode.GOING_AWAY, "test")  # type: ignore[index]
            first = await events.__anext__()
            second = await events.__anext__()
            assert first == Disconnected(CloseCode.GOING_AWAY, "test")
            assert isinstance(second, Connected) and second.reconnected


async def test_requests_time_out_and_in_flight_requests_fail_on_connection_loss(
    nursery: trio.Nursery,
) -> None:
    """Against a fake server that welcomes, then never replies (and later hangs up)."""
    hang_up = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        await ws.send_message(codec.encode(f.Welcome(1, "fake", 0, 25000, {})))
        await hang_up.wait()
        await ws.aclose(1011, "fake server hangs up")

    ws_server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        client = Client(f"ws://127.0.0.1:{ws_server.port}/", request_timeout=0.1, reconnect=False)
        async with trio.open_nursery() as n:
            await client.open(n)
            with pytest.raises(RequestTimeout):
                await client.broadcast("e")
            client.request_timeout = 10

            async def hang_up_soon() -> None:
                await trio.sleep(0.05)
                hang_up.set()

            n.start_soon(hang_up_soon)
            with pytest.raises(ConnectionLostError, match="1011"):
                await client.broadcast("e")
            with pytest.raises(NotConnectedError):
                await client.broadcast("e")
