"""The client's WebSocket layer against scripted servers (fake_ws.py): the pipelined hello,
pings, fragments, the message size bound, the close handshake both ways, protocol errors and
refused upgrades. Every test runs under trio and under asyncio (see ``backends.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from rtcore import CloseCode
from rtcore.client import (
    Client,
    Connected,
    ConnectionClosedError,
    Disconnected,
    HandshakeError,
    Msg,
    open_client,
)
from rtcore.protocol import RemoteProtocolError, codec
from rtcore.protocol import frames as f
from tests.integration.backends import TrioSide, both_backends, wait_until
from tests.integration.fake_ws import WELCOME, Peer, serve_fake


@both_backends
async def test_a_refused_upgrade_or_a_hang_up_raises_handshake_error(side: TrioSide) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await stream.aclose()

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async def serve(
        handler: Callable[[trio.SocketStream], Awaitable[None]], task_status: trio.TaskStatus[int]
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handler, listeners)

    port = await side.start(serve, refuse)
    with anyio.fail_after(10), pytest.raises(HandshakeError, match="HTTP 503") as info:
        async with open_client(f"ws://127.0.0.1:{port}/", reconnect=False):
            pass
    assert info.value.status_code == 503
    port = await side.start(serve, hang_up)
    with anyio.fail_after(10), pytest.raises(HandshakeError, match="during the TLS handshake"):
        async with open_client(f"wss://127.0.0.1:{port}/", reconnect=False):
            pass


@both_backends
async def test_the_hello_goes_with_the_upgrade_request(side: TrioSide) -> None:
    """The server holds its 101 back until the hello has arrived: only a client that sends
    the hello without waiting for the 101 gets connected."""
    peers: list[Peer] = []

    async def script(peer: Peer) -> None:
        peers.append(peer)
        await peer.send_frame(WELCOME)
        await peer.until_closed()

    port = await side.start(serve_fake, script, True, False)  # hold the 101; no welcome
    with anyio.fail_after(10):
        async with open_client(f"ws://127.0.0.1:{port}/", app="a", profile={"n": 1}) as c:
            assert c.id == "fake"
            (peer,) = await side.call(list, peers)
            assert peer.hello_before_101
            assert peer.hello is not None
            assert (peer.hello.app, peer.hello.profile) == ("a", {"n": 1})


@both_backends
async def test_without_pipelining_the_hello_waits_for_the_101(side: TrioSide) -> None:
    peers: list[Peer] = []

    async def script(peer: Peer) -> None:
        peers.append(peer)
        await peer.send_frame(WELCOME)
        await peer.until_closed()

    port = await side.start(serve_fake, script, False, False)  # the script welcomes
    with anyio.fail_after(10):
        async with open_client(f"ws://127.0.0.1:{port}/", pipeline_hello=False) as c:
            assert c.id == "fake"
            (peer,) = await side.call(list, peers)
            assert not peer.hello_before_101 and peer.hello is not None


@both_backends
async def test_pings_are_answered_and_fragments_reassembled(side: TrioSide) -> None:
    pongs: list[Any] = []

    async def script(peer: Peer) -> None:
        await peer.send(Ping(b"still there?"))  # before the welcome: answered even then
        pongs.append(await peer.next_event())
        await peer.send_fragmented(WELCOME)
        await peer.send_fragmented(f.Msg("room", "chat", {"text": "y" * 300}, "x", 1, "m"), 4)
        await peer.until_closed()

    port = await side.start(serve_fake, script, False, False)  # the script welcomes
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            client = Client(f"ws://127.0.0.1:{port}/", reconnect=False)
            events = client.events()
            tasks.start_soon(client.open, tasks)
            seen = []
            async for event in events:  # Connected, and the Msg (in either order)
                seen.append(event)
                if len(seen) == 2:
                    break
            assert Connected("fake", False) in seen
            assert f.Msg("room", "chat", {"text": "y" * 300}, "x", 1, "m") in seen
            assert pongs == [Pong(b"still there?")]
            await client.aclose()


def msg_of_size(size: int) -> f.Msg:
    """A msg frame whose encoding is exactly ``size`` bytes."""
    pad = size
    while True:
        msg = f.Msg(None, "big", "z" * pad, None, 1, "m")
        excess = len(codec.encode(msg)) - size
        if excess == 0:
            return msg
        pad -= excess


@both_backends
async def test_a_message_over_max_message_size_closes_with_1009(side: TrioSide) -> None:
    closes: list[CloseConnection] = []

    async def script(peer: Peer) -> None:
        await peer.send_fragmented(msg_of_size(1000), 4)  # at the limit: delivered
        await peer.send_fragmented(msg_of_size(1001), 4)  # each fragment well under it
        event = await peer.next_event()
        assert isinstance(event, CloseConnection)
        closes.append(event)

    port = await side.start(serve_fake, script)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            client = Client(f"ws://127.0.0.1:{port}/", reconnect=False, max_message_size=1000)
            events = client.events()
            await client.open(tasks)
            got = [event async for event in events if not isinstance(event, Connected)]
        assert len(got) == 2 and isinstance(got[0], Msg) and got[0].event == "big"
        assert isinstance(got[1], Disconnected) and got[1].code == 1009
        assert "max_message_size=1000" in got[1].reason
        await wait_until(lambda: len(closes) == 1)  # the fake server's side of it
        assert [c.code for c in await side.call(list, closes)] == [1009]


@both_backends
async def test_the_close_handshake_both_ways(side: TrioSide) -> None:
    closes: list[CloseConnection] = []

    async def script(peer: Peer) -> None:
        if peer.hello is not None and peer.hello.app == "server-closes":
            await peer.send(CloseConnection(CloseCode.APP_DISABLED, "app disabled"))
            event = await peer.next_event()  # the client's answer
        else:
            event = await peer.until_closed()
        assert isinstance(event, CloseConnection)
        closes.append(event)

    port = await side.start(serve_fake, script)
    with anyio.fail_after(10):
        async with open_client(f"ws://127.0.0.1:{port}/") as c:  # closes on exit
            assert c.id == "fake"
        await wait_until(lambda: len(closes) == 1)  # the fake server's side of it
        assert [(e.code, e.reason) for e in await side.call(list, closes)] == [(1000, "")]
        with pytest.raises(ConnectionClosedError) as info:
            async with open_client(f"ws://127.0.0.1:{port}/", app="server-closes") as c:
                async for _ in c.events():
                    pass
        assert (info.value.code, info.value.reason) == (CloseCode.APP_DISABLED, "app disabled")
        await wait_until(lambda: len(closes) == 2)
        answered = await side.call(list, closes)
        assert [(e.code, e.reason) for e in answered[1:]] == [
            (CloseCode.APP_DISABLED, "app disabled")
        ]


@pytest.mark.parametrize(
    ("sent", "error", "close_code"),
    [
        (TextMessage("not msgpack"), "the server sent a text frame", 1003),
        (BytesMessage(b"\x01"), "a frame must be a msgpack map", 1002),
    ],
)
@both_backends
async def test_a_server_breaking_the_protocol_is_closed_with_its_code(
    side: TrioSide, sent: Any, error: str, close_code: int
) -> None:
    closes: list[CloseConnection] = []

    async def script(peer: Peer) -> None:
        await peer.send(sent)
        event = await peer.next_event()
        assert isinstance(event, CloseConnection)
        closes.append(event)

    port = await side.start(serve_fake, script)
    with anyio.fail_after(10):
        errors: list[Exception] = []
        client = Client(f"ws://127.0.0.1:{port}/", reconnect=False)
        client.on_error(errors.append)
        events = client.events()
        async with anyio.create_task_group() as tasks:
            await client.open(tasks)
            assert [e async for e in events if isinstance(e, Disconnected)] == [
                Disconnected(1006, error)
            ]
        assert [(type(e), str(e)) for e in errors] == [(RemoteProtocolError, error)]
        await wait_until(lambda: len(closes) == 1)  # the fake server's side of it
        assert [c.code for c in await side.call(list, closes)] == [close_code]
