"""The client's WebSocket transport: wsproto driven over an anyio byte stream.

Theory of operation: wsproto is the protocol (handshake, framing, close handshake); anyio is
the I/O, so the same code runs under trio and asyncio. This module is the one place where
anyio's stream exceptions and wsproto's errors are translated: a connection that ends, for
any reason, raises :class:`WebSocketClosed` with its close code (1006 when the peer vanished
without a close frame).

Invariants:

- One task reads (:meth:`WebSocket.get_message`); any task may send. Sends are serialised by
  a lock, so frames of concurrent messages never interleave.
- The reader answers pings itself, so they are answered as long as someone reads.
- Fragmented messages are reassembled (``rtcore.protocol.assembly``, as the server does); one
  larger than ``max_message_size`` is refused with close code 1009 instead of being buffered
  without bound.
- A close frame from the server is answered (the close handshake) before the reader raises;
  :meth:`WebSocket.aclose` sends ours and waits, as long as its caller allows, for the answer.
- A ``first_message`` given to :func:`connect` is framed and written together with the
  upgrade request, without waiting for the 101 (saving a round trip; the rtcore server keeps
  bytes that arrive after the upgrade request).
"""

from __future__ import annotations

import ssl
from typing import AnyStr, NoReturn
from urllib.parse import urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from rtcore.client.errors import HandshakeError
from rtcore.protocol.assembly import MessageAssembler, MessageTooBig

RECEIVE_SIZE = 65536
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,  # includes ssl.SSLError
)


class WebSocketClosed(Exception):
    """The WebSocket connection ended (internal: the client translates it).

    Attributes:
        code: the close code received, sent, or 1006 when the connection was lost.
        reason: the close reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class WebSocket:
    """An open client WebSocket connection (after a successful upgrade)."""

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, max_message_size: int
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._max_message_size = max_message_size
        self._send_lock = anyio.Lock()
        self._assembly = MessageAssembler()
        self._closed: WebSocketClosed | None = None
        self._close_answered = anyio.Event()

    async def send_message(self, data: bytes) -> None:
        """Send one binary message.

        Raises:
            WebSocketClosed: the connection is closing or was lost.
        """
        await self._send(BytesMessage(data=data))

    async def get_message(self) -> bytes | str:
        """The next complete message (binary: bytes, text: str); answers pings meanwhile.

        Raises:
            WebSocketClosed: the connection ended (close handshake done, or lost).
        """
        while True:
            if self._closed is not None:
                raise self._closed
            for event in self._ws.events():
                message = await self._handle(event)
                if message is not None:
                    return message
            try:
                data: bytes | None = await self._stream.receive(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                data = None  # wsproto turns this into a 1006 close event
            self._ws.receive_data(data)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait for the server's answer (read by the reader task),
        then drop the TCP connection. Bound the wait with a cancel scope."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                await self._send(CloseConnection(code, reason))
                await self._close_answered.wait()
        except WebSocketClosed:
            pass
        finally:
            self._close_answered.set()
            await anyio.aclose_forcefully(self._stream)

    async def _handle(self, event: Event) -> bytes | str | None:
        if isinstance(event, BytesMessage):
            return await self._assemble(bytes(event.data), event.message_finished)
        if isinstance(event, TextMessage):
            return await self._assemble(event.data, event.message_finished)
        if isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:  # (once closing, pings go unanswered)
                await self._send(event.response())
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.OPEN:  # wsproto could not parse a frame
                await self._fail(event.code, event.reason or "invalid frame from the server")
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                await self._send_quietly(event.response())
            self._closed = WebSocketClosed(event.code, event.reason or "")
            self._close_answered.set()
            await anyio.aclose_forcefully(self._stream)
            raise self._closed
        return None

    async def _assemble(self, data: AnyStr, finished: bool) -> AnyStr | None:
        limit = self._max_message_size
        try:
            return self._assembly.add(data, finished, limit)
        except MessageTooBig:
            pass  # (closing outside the handler: the close is not this exception's context)
        await self._fail(MESSAGE_TOO_BIG, f"message exceeds max_message_size={limit}")

    async def _fail(self, code: int, reason: str) -> NoReturn:
        """Close with ``code`` because of what the server sent, and raise."""
        self._closed = WebSocketClosed(code, reason)
        await self.abort(code, reason)
        raise self._closed

    async def abort(self, code: int, reason: str) -> None:
        """Send a close frame if the connection is still open (waiting at most a second:
        the server may not be reading), then drop the TCP connection without waiting for
        the server's answer."""
        if self._ws.state is ConnectionState.OPEN:
            with anyio.move_on_after(1):
                await self._send_quietly(CloseConnection(code, reason))
        self._close_answered.set()
        await anyio.aclose_forcefully(self._stream)

    async def _send_quietly(self, event: Event) -> None:
        try:
            await self._send(event)
        except WebSocketClosed:
            pass

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            try:
                data = self._ws.send(event)
            except LocalProtocolError as exc:  # not OPEN any more: closing or closed
                raise self._closed or WebSocketClosed(1000, "the connection is closing") from exc
            try:
                await self._stream.send(data)
            except _STREAM_ERRORS as exc:
                raise WebSocketClosed(ABNORMAL_CLOSURE, "connection lost") from exc


async def connect(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    max_message_size: int,
    first_message: bytes | None = None,
) -> WebSocket:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``).

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL.
        OSError: the TCP connection or the TLS handshake failed (``ssl.SSLError`` is one).
        HandshakeError: the server hung up during the TLS handshake, or did not accept the
            upgrade.
    """
    secure, host, port, host_header, target = parse_url(url)
    stream = await _open_stream(host, port, ssl_context, secure)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        data = ws.send(Request(host=host_header, target=target))
        if first_message is not None:
            data += bytes(FrameProtocol(client=True, extensions=[]).send_data(first_message))
        try:
            await stream.send(data)
        except _STREAM_ERRORS as exc:
            raise HandshakeError(f"the connection broke during the upgrade: {exc!r}") from exc
        await _await_accept(stream, ws)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    return WebSocket(stream, ws, max_message_size)


async def _open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None, secure: bool
) -> anyio.abc.ByteStream:
    """The TCP connection, with TLS if ``secure`` (``ssl_context`` None: the system's)."""
    if not secure:  # (anyio would start TLS if it were given an ssl_context)
        return await anyio.connect_tcp(host, port)
    try:
        # The WebSocket close handshake, not TLS close_notify, marks the end of the stream.
        return await anyio.connect_tcp(
            host, port, tls=True, ssl_context=ssl_context, tls_standard_compatible=False
        )
    except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
        raise HandshakeError("the server hung up during the TLS handshake") from exc


async def _await_accept(stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
    """Read the upgrade response (h11 bounds its size); leaves later bytes in ``ws``."""
    while True:
        try:
            data = await stream.receive(RECEIVE_SIZE)
        except _STREAM_ERRORS as exc:
            raise HandshakeError("the server hung up during the WebSocket upgrade") from exc
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise HandshakeError(
                        f"the server refused the WebSocket upgrade with HTTP {event.status_code}",
                        event.status_code,
                    )
        except RemoteProtocolError as exc:
            raise HandshakeError(f"invalid WebSocket upgrade response: {exc}") from exc


def parse_url(url: str) -> tuple[bool, str, int, str, str]:
    """``(secure, host, port, Host header, request target)`` of a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]  # keeps [brackets] and an explicit port
    return secure, parts.hostname, port, host_header, target
