"""A deliberately minimal WebSocket client for tests that need control the real client
does not give: raw bytes, text frames, no automatic pongs, a tiny receive buffer."""

from __future__ import annotations

import socket
from typing import Any

import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

from rtcore.protocol import codec


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class RawClient:
    def __init__(self, stream: trio.SocketStream, *, answer_pings: bool) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.pings = 0
        self._parts: list[bytes] = []
        self._events: list[Any] = []

    @classmethod
    async def connect(
        cls,
        address: tuple[str, int],
        *,
        answer_pings: bool = True,
        rcvbuf: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> RawClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:  # before connect, so the TCP window is negotiated small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(address)
        client = cls(trio.SocketStream(sock), answer_pings=answer_pings)
        request = Request(host=address[0], target="/", extra_headers=headers or [])
        await client.stream.send_all(client.ws.send(request))
        while True:
            event = await client._next_event()
            if isinstance(event, AcceptConnection):
                return client

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(Message(data=data)))

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def send(self, **obj: Any) -> None:
        await self.send_bytes(codec.pack(obj))

    async def hello(self, **fields: Any) -> Any:
        await self.send(t="hello", v=1, **fields)
        return await self.recv()

    async def _next_event(self) -> Any:
        while not self._events:
            for event in self.ws.events():
                self._events.append(event)
            if self._events:
                break
            data = await self.stream.receive_some(65536)
            if not data:
                raise Closed(1006, "EOF without a close frame")
            self.ws.receive_data(data)
        return self._events.pop(0)

    async def recv(self) -> Any:
        """The next server frame, decoded; raises Closed on a close frame."""
        while True:
            event = await self._next_event()
            if isinstance(event, BytesMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    data = b"".join(self._parts)
                    self._parts.clear()
                    return codec.decode(data, allowed=codec.SERVER_TYPES)
            elif isinstance(event, TextMessage):
                raise AssertionError("the server sent a text frame")
            elif isinstance(event, Ping):
                self.pings += 1
                # After a close (ours or the server's) a WebSocket endpoint sends no more
                # frames: a pong then would be a protocol error.
                if self.answer_pings and self.ws.state is ConnectionState.OPEN:
                    # Shielded: tests read with timeouts (move_on_after around recv), and a
                    # pong cut halfway by one would corrupt the stream -- the server then
                    # hears no pong and closes with 4009 (a flaky heartbeat test, once).
                    with trio.CancelScope(shield=True):
                        await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:  # not if we closed first
                    try:
                        await self.stream.send_all(self.ws.send(event.response()))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                raise Closed(event.code, event.reason or "")

    async def closed(self) -> Closed:
        """Read until the server closes; returns the close (frames before it are discarded)."""
        while True:
            try:
                await self.recv()
            except Closed as exc:
                return exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame (then :meth:`closed` reads up to the server's answer)."""
        await self.stream.send_all(self.ws.send(CloseConnection(code, reason)))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
