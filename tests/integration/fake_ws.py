"""A scripted WebSocket server (trio + wsproto) for client tests that need the server to do
what rtcore's never does: hold back the 101, ping on demand, fragment messages, send too
much, text frames, or never answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import wsproto
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Event, Request
from wsproto.frame_protocol import FrameProtocol

from rtcore.protocol import codec
from rtcore.protocol import frames as f

WELCOME = f.Welcome(1, "fake", 0, 25000, {})


@attrs.define
class Peer:
    """One client connection, after the upgrade and the hello."""

    stream: trio.SocketStream
    ws: Connection
    hello: f.Hello | None = None
    hello_before_101: bool = False
    """The hello had fully arrived when the server sent its 101."""

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_frame(self, frame: Any) -> None:
        await self.send(BytesMessage(data=codec.encode(frame)))

    async def send_fragmented(self, frame: Any, parts: int = 3) -> None:
        """One message in ``parts`` fragments, each written separately."""
        data = codec.encode(frame)
        step = -(-len(data) // parts)
        for start in range(0, len(data), step):
            last = start + step >= len(data)
            await self.send(BytesMessage(data=data[start : start + step], message_finished=last))

    async def until_closed(self) -> CloseConnection:
        """Read until the client's close frame, answer it, and return it."""
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                await self.send(event.response())
                return event

    async def next_event(self) -> Event:
        """The next WebSocket event from the client (pongs and close frames included)."""
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)


Script = Callable[[Peer], Awaitable[None]]


async def serve_fake(
    script: Script,
    hold_101_for_hello: bool = False,
    welcome: bool = True,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1 (port reported to ``nursery.start``); each connection is upgraded,
    its hello read (and, if ``welcome``, answered), then handed to ``script``.

    With ``hold_101_for_hello`` the 101 is only sent once the hello has arrived: a client
    that waits for the 101 before sending its hello never gets connected."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            peer = await _upgrade(stream, hold_101_for_hello)
            if welcome:
                await peer.send_frame(WELCOME)
            await script(peer)

    await trio.serve_listeners(handle, listeners)


async def _upgrade(stream: trio.SocketStream, hold_101_for_hello: bool) -> Peer:
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(65536)
        assert len(received) < 65536, "the upgrade request never ended"
    request, ahead = received.split(b"\r\n\r\n", 1)
    while hold_101_for_hello and not _complete_frame(ahead):
        ahead += await stream.receive_some(65536)
    handshake = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    handshake.receive_data(request + b"\r\n\r\n")
    assert any(isinstance(e, Request) for e in handshake.events())
    await stream.send_all(handshake.send(AcceptConnection()))
    assert handshake.connection is not None
    peer = Peer(stream, handshake.connection, hello_before_101=_complete_frame(ahead))
    peer.ws.receive_data(ahead)
    event = await peer.next_event()
    assert isinstance(event, BytesMessage) and event.message_finished
    hello = codec.decode(bytes(event.data), allowed=codec.CLIENT_TYPES)
    assert isinstance(hello, f.Hello)
    peer.hello = hello
    return peer


def _complete_frame(data: bytes) -> bool:
    frames = FrameProtocol(client=False, extensions=[])
    frames.receive_bytes(data)
    return any(frame.message_finished for frame in frames.received_frames())
