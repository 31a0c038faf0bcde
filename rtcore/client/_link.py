"""A client's connection manager: connect, hello, welcome, rejoin, read; reconnect.

Theory of operation: one manager task (:meth:`Link.run`) owns the connection. It connects,
sends ``hello`` (carrying the latest token and profile; by default in the same write as the
upgrade request, without waiting for the 101), waits for ``welcome``, rejoins the remembered
channels, then reads frames until the connection ends, dispatching each: replies resolve the
waiting request, events go to the registered handlers and to every open event iterator. The
reader never waits on the application (handlers are called inline; iterators that fall
behind are stopped, see ``_events``), so pings are answered.

After an unexpected close the manager reconnects with jittered exponential backoff; a
connection that got as far as ready resets the backoff. Close codes that reconnecting cannot
fix (``FATAL_CLOSE_CODES``) end the client with :class:`ConnectionClosedError`.

The manager reads its client's settings live through :class:`Settings` (the client updates
``token`` on refresh and ``profile`` on a profile update; an application may change any).
"""

from __future__ import annotations

import functools
import random
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from rtcore.client._channel_tokens import ChannelTokens
from rtcore.client._channels import Channels
from rtcore.client._events import Connected, Disconnected, Listeners, Rejoining
from rtcore.client._handlers import MSG, Handlers
from rtcore.client._presence import member_events
from rtcore.client._requests import (
    OnOk,
    Requests,
    join_request,
    list_members,
    refresh_request,
)
from rtcore.client._websocket import WebSocket, WebSocketClosed, connect
from rtcore.client.errors import (
    BufferFullError,
    ChannelTokenError,
    ConnectionClosedError,
    ConnectionLostError,
    HandshakeError,
    NotConnectedError,
    RequestError,
    RequestTimeout,
)
from rtcore.protocol import PROTOCOL_VERSION, CloseCode, RemoteProtocolError, codec
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

FATAL_CLOSE_CODES = frozenset(
    {
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.HELLO_EXPECTED,
        CloseCode.UNSUPPORTED_VERSION,
        CloseCode.DUPLICATE_HELLO,
        CloseCode.UNKNOWN_APP,
        CloseCode.APP_DISABLED,
        CloseCode.API_KEY_MISSING,
        CloseCode.API_KEY_INVALID,
        CloseCode.API_KEY_EXPIRED,
        CloseCode.SESSION_MISSING,
        CloseCode.SESSION_INVALID,
        CloseCode.SESSION_EXPIRED,
        CloseCode.SESSION_ENDED,
        CloseCode.DISCONNECTED,
        CloseCode.KEY_NOT_REALTIME,
        CloseCode.ORIGIN_NOT_ALLOWED,
        CloseCode.IP_NOT_ALLOWED,
        CloseCode.ORIGIN_MISSING,
    }
)
"""Close codes after which reconnecting would fail again the same way."""


class Settings(Protocol):
    """The client's settings the manager reads (``Client``'s keyword arguments)."""

    url: str
    app: str | None
    key: str | None
    token: str | None
    profile: Any
    echo: bool
    reconnect: bool
    backoff_initial: float
    backoff_max: float
    request_timeout: float
    buffer_limit: int
    fail_fast: bool
    connect_timeout: float
    max_message_size: int
    ssl_context: ssl.SSLContext | None
    pipeline_hello: bool
    presence_diffs: bool
    connect_data: Any


class Link:
    """The connection, its state, and the task that keeps it open."""

    def __init__(
        self,
        settings: Settings,
        channels: Channels,
        handlers: Handlers,
        listeners: Listeners,
        tokens: ChannelTokens,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        """The channel-token provider and the refreshes it schedules."""
        self.tasks: anyio.abc.TaskGroup | None = None
        """The current connection's tasks (the channel-token refreshes run there)."""
        self.channels = channels
        self.handlers = handlers
        self.listeners = listeners
        self.requests = Requests()
        self.id: str | None = None
        self.welcome: f.Welcome | None = None
        self.ws: WebSocket | None = None
        # anyio.Event() made outside an event loop binds to the loop on first use.
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self.closed = False
        """The application closed the client: stop, do not reconnect."""
        self.fatal: ConnectionClosedError | None = None
        self.cancel: anyio.CancelScope | None = None
        self.waiting = 0
        """How many requests wait for the connection (at most ``buffer_limit``)."""
        self._was_ready = False
        self._connections = 0
        self.rejoining: dict[str, anyio.Event] = {}
        """Channels whose rejoin is being retried: sends to them wait for it (or the end of
        the connection), rather than being refused ``not_member``."""

    # -- requests -----------------------------------------------------------------------------

    async def request(
        self, make: Callable[[int], f.Request], *, buffered: bool = True, on_ok: OnOk | None = None
    ) -> Any:
        """Send a request (waiting for the connection if ``buffered``); its ``ok``'s data."""
        if buffered:
            await self._wait_connected()
        ws = self.ws
        if ws is None:
            raise NotConnectedError("not connected")
        timeout = self.settings.request_timeout
        with anyio.move_on_after(timeout):
            return await self.requests.send(ws, make, on_ok)
        raise RequestTimeout(f"no reply within {timeout} s")

    async def join(
        self,
        channel: str,
        echo: bool | None,
        recover: Position | None,
        data: Any = None,
        *,
        buffered: bool = True,
    ) -> Any:
        """Join ``channel`` (``data`` for the app's join hook) with a channel token from the
        provider (when there is one); a join with a token has its refresh scheduled before
        the token expires."""
        if buffered:
            await self._wait_connected()
        token = await self.tokens.get(channel)
        reply = await self.request(
            functools.partial(join_request, channel, echo, recover, token, data),
            buffered=buffered,
            on_ok=functools.partial(self.channels.joined, channel),
        )
        if token is not None:
            self._schedule_refresh(channel, token)
        return reply

    def _schedule_refresh(self, channel: str, token: str) -> None:
        self.tokens.cancel(channel)
        delay = self.tokens.refresh_delay(token)
        if delay is None or self.tasks is None:
            return
        scope = self.tokens.scopes[channel] = anyio.CancelScope()
        self.tasks.start_soon(self._refresh_channel, channel, delay, scope)

    async def _refresh_channel(self, channel: str, delay: float, scope: anyio.CancelScope) -> None:
        """Before the channel's token expires: a fresh one from the provider, sent with a
        per-channel ``refresh`` (protocol.md §4.4.2); a refusal is reported as an error."""
        with scope:
            await anyio.sleep(delay)
            token = await self.tokens.get(channel)
            if token is None:
                return
            try:
                await self.request(
                    functools.partial(refresh_request, token, channel=channel), buffered=False
                )
            except RequestError as exc:
                self.handlers.emit("error", exc)
                return
            except (ConnectionLostError, RequestTimeout, NotConnectedError):
                return  # the rejoin asks for a token again
            self.tokens.scopes.pop(channel, None)
            self._schedule_refresh(channel, token)

    async def channel_ready(self, channel: str) -> None:
        """Wait while ``channel``'s rejoin is being retried (see ``_rejoin``)."""
        event = self.rejoining.get(channel)
        if event is not None:
            if self.settings.fail_fast:
                raise NotConnectedError(f"{channel!r} is being rejoined (fail_fast is on)")
            await event.wait()

    async def _wait_connected(self) -> None:
        if self.ready.is_set():
            return
        if self.closed or self.fatal is not None:
            raise self.fatal or NotConnectedError("the client is closed")
        if self.settings.fail_fast:
            raise NotConnectedError("not connected (fail_fast is on)")
        limit = self.settings.buffer_limit
        if self.waiting >= limit:
            raise BufferFullError(f"{limit} requests already wait for the connection")
        self.waiting += 1
        try:
            await self.wait_ready_or_stopped()
        finally:
            self.waiting -= 1
        if not self.ready.is_set():
            raise self.fatal or NotConnectedError("the client is closed")

    async def wait_ready_or_stopped(self) -> None:
        async with anyio.create_task_group() as n:

            async def stop_when(event: anyio.Event) -> None:
                await event.wait()
                n.cancel_scope.cancel()

            n.start_soon(stop_when, self.ready)
            n.start_soon(stop_when, self.stopped)

    # -- the connection manager ---------------------------------------------------------------

    async def run(self, first_error: list[BaseException]) -> None:
        """Connect and reconnect until closed; the first attempt's failure goes to
        ``first_error``."""
        attempt = 0
        try:
            with anyio.CancelScope() as self.cancel:
                while not self.closed:
                    code, reason = await self._connect_once(first_error)
                    if code in FATAL_CLOSE_CODES:
                        self.fatal = ConnectionClosedError(code, reason)
                        if code in (CloseCode.SESSION_ENDED, CloseCode.DISCONNECTED):
                            self.handlers.emit("session_ended", self.fatal)
                        self.handlers.emit("error", self.fatal)
                        return
                    if self.closed or not self.settings.reconnect:
                        return
                    # A connection that got as far as ready resets the backoff.
                    attempt = 1 if self._was_ready else attempt + 1
                    self._was_ready = False
                    await anyio.sleep(random.uniform(0, self._backoff(attempt)))
                    self.handlers.emit("reconnect_attempt", attempt)
        finally:
            self.stopped.set()
            self.listeners.end_all()

    def _backoff(self, attempt: int) -> float:
        """The bound of the delay before reconnection ``attempt`` (1, 2, ...)."""
        settings = self.settings
        return min(settings.backoff_max, settings.backoff_initial * 2.0 ** (attempt - 1))

    async def _connect_once(self, first_error: list[BaseException]) -> tuple[int, str]:
        """One connection's life; returns its close code and reason."""
        code, reason = 1006, "connection failed"
        try:
            async with anyio.create_task_group() as tasks:
                try:
                    with anyio.fail_after(self.settings.connect_timeout):
                        self.ws = ws = await self._connect()
                        await self._await_welcome(ws)
                    self.tasks = tasks
                    tasks.start_soon(self._rejoin, self._connections > 0)
                    self._connections += 1
                    await self._read(ws)
                except WebSocketClosed as exc:
                    code, reason = exc.code, exc.reason
                except (OSError, HandshakeError, RemoteProtocolError) as exc:
                    # OSError includes TimeoutError (connect_timeout) and ssl.SSLError.
                    if not first_error:
                        first_error.append(exc)
                    reason = str(exc) or type(exc).__name__
                    self.handlers.emit("error", exc)
                    if isinstance(exc, RemoteProtocolError) and self.ws is not None:
                        await self.ws.abort(_close_code_for(exc), exc.message)
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await self._disconnected(code, reason)
        self.handlers.emit("disconnect", code, reason)
        self.listeners.publish(Disconnected(code, reason))
        return code, reason

    async def _disconnected(self, code: int, reason: str) -> None:
        """The connection ended: drop it and what belonged to it."""
        was_ready = self.ready.is_set()
        if self.ws is not None:
            with anyio.CancelScope(shield=True):
                await self.ws.abort(CloseCode.GOING_AWAY, "client stopped")
        self.ws, self.tasks = None, None
        self.tokens.scopes.clear()  # (their task group is gone)
        self._rejoined(*self.rejoining)  # their sends now wait for the connection
        self.channels.members.forget()  # a new connection is a new member: lists start afresh
        if was_ready:
            self.ready = anyio.Event()
        self.requests.fail_all(ConnectionLostError(f"connection lost ({code}): {reason}"))

    async def _connect(self) -> WebSocket:
        """TCP (and TLS), the upgrade, and the hello: pipelined with the upgrade request, or
        sent after the 101 when ``pipeline_hello`` is off."""
        settings = self.settings
        hello = codec.encode(self._hello())
        ws = await connect(
            settings.url,
            ssl_context=settings.ssl_context,
            max_message_size=settings.max_message_size,
            first_message=hello if settings.pipeline_hello else None,
        )
        if not settings.pipeline_hello:
            try:
                await ws.send_message(hello)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await ws.abort(CloseCode.GOING_AWAY, "client stopped")
                raise
        return ws

    def _hello(self) -> f.Hello:
        s = self.settings
        features = ("presence_diffs", "history") if s.presence_diffs else ("history",)
        return f.Hello(
            PROTOCOL_VERSION, s.app, s.key, s.token, s.profile, s.echo, features, s.connect_data
        )

    async def _await_welcome(self, ws: WebSocket) -> None:
        welcome = codec.decode_server_frame(_binary(await ws.get_message()))
        if not isinstance(welcome, f.Welcome):
            raise RemoteProtocolError(f"expected welcome, got {type(welcome).__name__}")
        self.welcome, self.id = welcome, welcome.conn
        self.tokens.synced(welcome.time)

    async def _rejoin(self, reconnected: bool) -> None:
        """Rejoin remembered channels (recovering from their positions), then release
        buffered requests. A rejoin refused for a passing reason (``broker_unavailable``,
        ``rate_limited``) or unanswered (``request_timeout``) keeps its channel: it is
        retried with backoff while the connection lasts, each failure told to ``on_error``
        and iterators (:class:`Rejoining`). The client is ready after the first round,
        whatever it brought: never connected and stuck before ready."""
        try:
            await self._rejoin_all(reconnected)
        except (ConnectionLostError, NotConnectedError):
            return  # the connection is ending: the manager reconnects and rejoins afresh

    async def _rejoin_all(self, reconnected: bool) -> None:
        pending = [c for c in list(self.channels.rejoin) if not await self._rejoin_one(c, 0)]
        self._was_ready = True
        self.ready.set()
        assert self.id is not None
        self.handlers.emit("connect", self.id)
        self.listeners.publish(Connected(self.id, reconnected))
        attempt = 0
        while pending:
            attempt += 1
            await anyio.sleep(random.uniform(0.5, 1.0) * self._backoff(attempt))
            retry = [c for c in pending if not await self._rejoin_one(c, attempt)]
            self._rejoined(*(c for c in pending if c not in retry))
            pending = retry

    def _rejoined(self, *channels: str) -> None:
        """These channels' rejoins are over (joined, refused for good, or the connection
        ended): sends waiting for them go on."""
        for channel in channels:
            event = self.rejoining.pop(channel, None)
            if event is not None:
                event.set()

    async def _rejoin_one(self, channel: str, attempt: int) -> bool:
        """One rejoin of ``channel``; False when it is to be retried."""
        channels = self.channels
        if channel not in channels.rejoin:  # left meanwhile
            return True
        echo, data = channels.rejoin[channel], channels.join_data.get(channel)
        try:
            await self.join(channel, echo, channels.positions.get(channel), data, buffered=False)
        except RequestError as exc:
            self.handlers.emit("error", exc)
            if not exc.retry_safe:  # refused for good (say, forbidden now): forget it
                channels.forget(channel)
                self._rejoined(channel)
                return True
            reason = exc.code
        except RequestTimeout as exc:
            self.handlers.emit("error", exc)
            reason = "request_timeout"
        except ChannelTokenError as exc:  # the application's provider failed: try again
            self.handlers.emit("error", exc)
            reason = "channel_token_unavailable"
        else:
            return True
        self.rejoining.setdefault(channel, anyio.Event())  # sends to it wait (channel_ready)
        self.listeners.publish(Rejoining(channel, reason, attempt + 1))
        return False

    async def _read(self, ws: WebSocket) -> None:
        while True:
            data = _binary(await ws.get_message())
            self.dispatch(codec.decode_server_frame(data))

    # -- frames from the server ---------------------------------------------------------------

    def dispatch(self, frame: f.ServerFrame) -> None:
        """Hand one frame from the server to whoever waits for it."""
        if isinstance(frame, f.Ok | f.Err):
            if not self.requests.resolve(frame) and isinstance(frame, f.Err):
                self.handlers.emit("error", RequestError(frame.code, frame.message))
        elif isinstance(frame, f.Msg):
            if frame.offset is not None and frame.channel is not None:
                if self.channels.seen(frame):
                    return
            self.handlers.emit(MSG + frame.event, frame)
            self.handlers.emit(MSG + "*", frame)
            self.listeners.publish(frame)
        elif isinstance(frame, f.MemberEvent):
            self._member_event(frame)
        elif isinstance(frame, f.PresenceDiff):
            for event in member_events(frame):
                if self.settings.echo or event.member["id"] != self.id:
                    self._member_event(event)
                else:
                    self.channels.members.apply(event)
        elif isinstance(frame, f.PresencePaused | f.PresenceResumed):  # §5.2.2
            if self.channels.members.told(frame) and self.tasks is not None:
                self.tasks.start_soon(self._relist, frame.channel)
            self.handlers.emit(frame.TYPE, frame)
            self.listeners.publish(frame)
        elif isinstance(frame, f.UserEvent):
            self.handlers.emit("user_event", frame)
            self.listeners.publish(frame)
        elif isinstance(frame, f.Left):
            self.channels.left(frame.channel)
            self.tokens.cancel(frame.channel)
            self.handlers.emit("left", frame)
            self.listeners.publish(frame)
        elif isinstance(frame, f.Joined):
            self.channels.server_joined(frame)
            self.handlers.emit("joined", frame)
            self.listeners.publish(frame)
        elif isinstance(frame, f.Gap):  # messages may have been missed (protocol.md §5.5)
            self.handlers.emit("gap", frame)
            self.listeners.publish(frame)

    async def _relist(self, channel: str) -> None:
        """After ``presence_resumed`` (§5.2.2): the channel listed again into its list."""
        limit = min(
            1000, (self.welcome.limits if self.welcome else {}).get("max_members_page", 1000)
        )
        merge = functools.partial(self.channels.members.merge_page, channel)
        try:
            await list_members(self.request, channel, limit, merge)
        except (RequestError, RequestTimeout, NotConnectedError) as exc:
            self.handlers.emit("error", exc)

    def _member_event(self, event: f.MemberEvent) -> None:
        self.channels.members.apply(event)
        self.handlers.emit(event.kind, event)
        self.listeners.publish(event)


def _binary(message: bytes | str) -> bytes:
    if isinstance(message, str):
        raise RemoteProtocolError(
            "the server sent a text frame", close_code=CloseCode.UNSUPPORTED_DATA
        )
    return message


def _close_code_for(exc: RemoteProtocolError) -> int:
    """The close code for a server that broke the protocol: the error's own if it is a
    standard WebSocket code (1003 for a text frame), else 1002 (rtcore's 4xxx codes are
    the server's words to its clients)."""
    code = exc.close_code
    return int(code) if code is not None and code < 4000 else 1002
