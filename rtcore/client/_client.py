"""The client library (the protocol.md client, with reconnects), for trio and asyncio.

It is written against anyio, so it runs in whichever of trio or asyncio is running (trio
natively; asyncio through anyio's asyncio backend), over wsproto (see ``_websocket``). A client
belongs to the event loop that opened it: using it from another loop or thread raises
:class:`EventLoopError` rather than failing somewhere inside the event loop.

Theory of operation: one manager task owns the connection. It connects, sends ``hello``
(carrying the latest profile; by default in the same write as the upgrade request, without
waiting for the 101), waits for ``welcome``, rejoins the remembered channels, then
reads frames until the connection ends, dispatching each: replies resolve the waiting request,
events go to the registered handlers and to every open event iterator. The reader never waits
on the application: handlers are plain functions called inline, and an iterator that falls
``maxsize`` events behind is stopped with :class:`EventOverflowError` rather than blocking
the reader (which would stop pings being answered) or skipping events silently.

Presence: the client asks for the ``presence_diffs`` feature (protocol.md §5.2.1) unless
``presence_diffs=False``, and handles both kinds of presence frames the same way: each
member's join, leave and update is applied to the channel's member list (:meth:`members`)
and handed to the ``on_join``/``on_leave``/``on_update`` handlers and to event iterators as
one :class:`MemberEvent`. Listing pages are merged into that list by the reader, as their
replies arrive, so the list converges to the server's whatever the interleaving.

History (protocol.md §4.4.1): for each joined channel with history the client keeps its
position, the ``(epoch, offset)`` of the last message it received there (:attr:`positions`),
and rejoins after a reconnect with ``recover``: the server replays what was published
meanwhile before anything new, and the client reports how that went with a
:class:`Recovered` event (``on_recover``, iterators). A message at or before the position
(already received) is dropped, so the application sees each message once, in order.

After an unexpected close the manager reconnects with jittered exponential backoff. Close
codes that reconnecting cannot fix (``FATAL_CLOSE_CODES``) end the client with
:class:`ConnectionClosedError`. While disconnected, requests wait for the connection (at most
``buffer_limit`` of them) or, with ``fail_fast``, raise :class:`NotConnectedError` at once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import ssl
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from rtcore.client._events import Connected, Disconnected, Event, EventStream, Recovered
from rtcore.client._presence import MemberLists, member_events
from rtcore.client._websocket import WebSocket, WebSocketClosed, connect, parse_url
from rtcore.client.errors import (
    BufferFullError,
    ConnectionClosedError,
    ConnectionLostError,
    EventLoopError,
    HandshakeError,
    NotConnectedError,
    RequestError,
    RequestTimeout,
)
from rtcore.protocol import PROTOCOL_VERSION, CloseCode, RemoteProtocolError, codec
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

if TYPE_CHECKING:
    import asyncio

    import trio

    TaskSpawner = trio.Nursery | anyio.abc.TaskGroup | asyncio.TaskGroup

log = logging.getLogger("rtcore.client")

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
    }
)
"""Close codes after which reconnecting would fail again the same way."""


Handler = Callable[..., Any]


class _Reply:
    __slots__ = ("done", "frame", "error", "on_ok")

    def __init__(self, on_ok: Callable[[Any], None] | None = None) -> None:
        self.done = anyio.Event()
        self.frame: f.Ok | f.Err | None = None
        self.error: Exception | None = None
        self.on_ok = on_ok
        """Called by the reader with the ``ok``'s data as it arrives, in frame order."""


class Client:
    """A connection to an rtcore server, kept open across network failures.

    Runs under trio and asyncio. Most code uses :func:`open_client`; ``Client(...)`` plus
    :meth:`open` suits code that manages its own nursery or task group. Every method must be
    called from the event loop (and so the thread) that opened the client.

    Args:
        url: ``ws://host:port/`` (or ``wss://``).
        app: the app to connect to; the server's default app when None.
        key: the app's client API key, if it requires one.
        token: a session token identifying the signed-in user.
        profile: the initial member profile, shown to other members.
        echo: default for receiving one's own sends and presence events.
        reconnect: reconnect after unexpected disconnects.
        backoff_initial: first reconnect delay bound, seconds; doubles per attempt...
        backoff_max: ...up to this bound. Each delay is drawn uniformly below the bound.
        request_timeout: seconds to wait for a reply once a request is sent.
        buffer_limit: requests that may wait for the connection while disconnected.
        fail_fast: raise NotConnectedError instead of waiting while disconnected.
        connect_timeout: seconds for one connection attempt (TCP, upgrade, hello, welcome).
        max_message_size: largest server message accepted, bytes; a larger one closes the
            connection with 1009 (and the client reconnects).
        ssl_context: for ``wss://`` URLs, the TLS context (default: the system's trust store).
        pipeline_hello: send the hello in the same write as the upgrade request, without
            waiting for the server's 101 (saves a round trip). Turn it off behind a proxy
            that drops bytes sent ahead of its 101.
        presence_diffs: ask the server for batched presence (protocol.md §5.2.1). Handlers
            and iterators see the same per-member events either way; with diffs, events
            about this connection itself are passed on only when ``echo`` is on.

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL.
    """

    def __init__(
        self,
        url: str,
        *,
        app: str | None = None,
        key: str | None = None,
        token: str | None = None,
        profile: Any = None,
        echo: bool = True,
        reconnect: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        request_timeout: float = 10.0,
        buffer_limit: int = 100,
        fail_fast: bool = False,
        connect_timeout: float = 10.0,
        max_message_size: int = 16 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        pipeline_hello: bool = True,
        presence_diffs: bool = True,
    ) -> None:
        parse_url(url)
        self.url = url
        self.app, self.key, self.token = app, key, token
        self.profile = profile
        self.echo = echo
        self.reconnect = reconnect
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.request_timeout = request_timeout
        self.buffer_limit = buffer_limit
        self.fail_fast = fail_fast
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.ssl_context = ssl_context
        self.pipeline_hello = pipeline_hello
        self.presence_diffs = presence_diffs
        self.id: str | None = None
        """This connection's member id (changes on reconnect)."""
        self.welcome: f.Welcome | None = None
        self.channels: dict[str, bool | None] = {}
        """Channels to rejoin after a reconnect, with their join echo option."""
        self.positions: dict[str, Position] = {}
        """Per joined channel with history: the last message received there (its epoch and
        offset), or the channel's top at the join. Rejoins recover from it."""
        self._members = MemberLists()
        """Joined channels' member lists, kept from presence frames and listings."""
        self._ws: WebSocket | None = None
        # anyio.Event() made outside an event loop binds to the loop on first use.
        self._ready = anyio.Event()
        self._closed = False
        self._fatal: ConnectionClosedError | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, _Reply] = {}
        self._waiting = 0
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._streams: set[EventStream] = set()
        self._cancel: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._was_ready = False
        self._connections = 0
        self._loop: object | None = None
        """The event loop that opened the client (anyio's native token for it)."""
        self._loop_name = ""

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self, nursery: TaskSpawner) -> None:
        """Start the connection in ``nursery``; returns once connected.

        ``nursery`` is where the connection's task runs: a trio nursery, an anyio task
        group, or an ``asyncio.TaskGroup``. With ``reconnect`` on, a server that is not up
        yet is retried with backoff until it is: bound the wait (``trio.move_on_after``,
        ``anyio.move_on_after``, ``asyncio.timeout``) if it matters.

        Raises:
            ConnectionClosedError: the server refused the connection with a fatal close code.
            OSError (``TimeoutError`` after ``connect_timeout``, ``ssl.SSLError``),
                HandshakeError: the first attempt failed and ``reconnect`` is off.
            EventLoopError: not running under trio or asyncio, or opened twice.
        """
        if self._loop is not None:
            raise EventLoopError("this client was already opened; open a new Client instead")
        self._loop = _current_loop()
        self._loop_name = _loop_name()
        first: list[BaseException] = []
        start_soon = getattr(nursery, "start_soon", None)
        if start_soon is not None:  # trio nursery, anyio task group
            start_soon(self._run, first)
        else:  # asyncio.TaskGroup
            nursery.create_task(self._run(first))  # type: ignore[union-attr]
        await self._wait_ready_or_stopped()
        if not self._ready.is_set():
            raise self._fatal or (first[0] if first else NotConnectedError("client closed"))

    async def _wait_ready_or_stopped(self) -> None:
        async with anyio.create_task_group() as n:

            async def stop_when(event: anyio.Event) -> None:
                await event.wait()
                n.cancel_scope.cancel()

            n.start_soon(stop_when, self._ready)
            n.start_soon(stop_when, self._stopped)

    async def aclose(self) -> None:
        """Close the connection (code 1000, waiting up to ``connect_timeout`` for the
        server's close frame) and stop reconnecting."""
        self._check_loop()
        self._closed = True
        ws = self._ws
        if ws is not None:
            with anyio.move_on_after(self.connect_timeout):
                await ws.aclose()
        if self._cancel is not None:
            self._cancel.cancel()
        for stream in list(self._streams):
            stream.end()

    def is_connected(self) -> bool:
        """Connected, welcomed and rejoined: requests are sent at once."""
        return self._ready.is_set()

    def _check_loop(self) -> None:
        """Raise EventLoopError unless called from the event loop that opened the client."""
        if self._loop is None:
            return
        if _current_loop() is not self._loop:
            raise EventLoopError(
                f"this client was opened in {self._loop_name} and called from "
                f"{_loop_name()}; a client can only be used from the event loop that opened it"
            )

    # -- requests -----------------------------------------------------------------------------

    async def join(
        self, channel: str, echo: bool | None = None, recover: Position | None = None
    ) -> bool:
        """Join a channel; returns False if already a member. Rejoined after reconnects,
        recovering what was missed if the channel keeps history.

        ``recover``: a position in the channel's stream (say, ``positions[channel]`` saved by
        an earlier run): the server replays what followed it before the ``ok``, and a
        :class:`Recovered` event says whether that was everything.
        """
        if recover is not None:
            self.positions[channel] = recover
        else:
            self.positions.pop(channel, None)
        data = await self._request(
            functools.partial(_join_request, channel, echo, recover),
            on_ok=functools.partial(self._track, channel),
        )
        self.channels[channel] = echo
        return bool(data["joined"])

    async def leave(self, channel: str, echo: bool | None = None) -> bool:
        """Leave a channel; returns False if not a member."""
        self.channels.pop(channel, None)
        self.positions.pop(channel, None)
        self._members.forget(channel)
        data = await self._request(lambda rid: f.Leave(rid, channel, echo))
        return bool(data["left"])

    async def get_members(self, channel: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every member of the channel as ``{"id", "user", "data"}`` (fetched page by page,
        ``page_size`` at a time, at most the server's ``max_members_page``).

        For a joined channel the pages are also merged into :meth:`members`' list.
        """
        members: list[dict[str, Any]] = []
        after: int | None = None
        merge = functools.partial(self._members.merge_page, channel)
        while True:
            limit = page_size
            if self.welcome is not None:  # the server's own bound, from the welcome frame
                limit = min(limit, self.welcome.limits.get("max_members_page", limit))
            page = functools.partial(_members_request, channel, after, limit)
            data = await self._request(page, on_ok=merge)
            members.extend(data["members"])
            after = data["next"]
            if after is None:
                return members

    def members(self, channel: str) -> list[dict[str, Any]]:
        """The joined channel's members as this client knows them (``{"id", "user", "data"}``),
        kept current by presence events; empty for a channel not joined.

        Complete once :meth:`get_members` has listed the channel since the join (and since
        the last reconnect, which starts the lists afresh); without a listing it holds the
        members whose joins this connection has seen. Needs the channel's presence events.
        """
        return self._members.members(channel)

    def _track(self, channel: str, data: Any) -> None:
        """A join's ok: presence frames for ``channel`` update its member list from now on;
        the channel's position is the stream's top unless the replay brought it there (or,
        recovering, say how that went)."""
        self._members.track(channel)
        if not isinstance(data, dict):
            return
        epoch, offset = data.get("epoch"), data.get("offset")
        top = Position(epoch, offset) if isinstance(epoch, str) and type(offset) is int else None
        if "recovered" in data:
            if not data["recovered"] or top is None:
                _set(self.positions, channel, top)
            event = Recovered(channel, bool(data["recovered"]), data.get("reason"), top)
            self._emit("recover", event)
            self._publish(event)
        elif top is not None and channel not in self.positions:
            self.positions[channel] = top

    async def history(
        self,
        channel: str,
        since: Position | None = None,
        limit: int = 100,
        reverse: bool = False,
    ) -> HistoryPage:
        """A page of the channel's history (protocol.md §4.11): oldest first after ``since``
        (from the oldest held without it), or newest first before it with ``reverse``. Pass
        the page's ``next`` as ``since`` for the next page; None: that was the last.

        Raises:
            RequestError: ``history_unavailable``, ``forbidden``, ``unrecoverable_position``
                (``since`` is no longer in the stream), ...
        """
        data = await self._request(
            functools.partial(_history_request, channel, since, limit, reverse)
        )
        return HistoryPage.from_reply(data)

    async def update_profile(self, data: Any, echo: bool | None = None) -> int:
        """Replace the profile; returns how many channels were told. Kept across reconnects."""
        self.profile = data
        result = await self._request(lambda rid: f.UpdateProfile(rid, data, echo))
        return int(result["channels"])

    async def send(
        self, channel: str, event: str, data: Any = None, echo: bool | None = None
    ) -> dict[str, Any]:
        """Send an event to a joined channel; returns ``{"mid", "ts", "recipients"}``."""
        return await self._request(lambda rid: f.Send(rid, channel, event, data, echo))  # type: ignore[no-any-return]

    async def broadcast(
        self, event: str, data: Any = None, echo: bool | None = None
    ) -> dict[str, Any]:
        """Send an event to every connection of the app; returns ``{"mid", "ts", "recipients"}``."""
        return await self._request(lambda rid: f.Broadcast(rid, event, data, echo))  # type: ignore[no-any-return]

    async def refresh(self, token: str) -> float | None:
        """Hand the server a fresh session token for the same user, before the current one
        expires (apps with ``expire_connections`` close connections whose token expired).
        It is also used for later reconnects. Returns the new expiry (Unix time) or None."""
        result = await self._request(functools.partial(_refresh_request, token))
        self.token = token
        return None if result["expires"] is None else result["expires"] / 1000

    async def _request(
        self,
        make: Callable[[int], Any],
        *,
        buffered: bool = True,
        on_ok: Callable[[Any], None] | None = None,
    ) -> Any:
        self._check_loop()
        if buffered:
            await self._wait_connected()
        ws = self._ws
        if ws is None:
            raise NotConnectedError("not connected")
        rid = next(self._ids)
        reply = self._replies[rid] = _Reply(on_ok)
        try:
            with anyio.move_on_after(self.request_timeout) as scope:
                try:
                    await ws.send_message(codec.encode(make(rid)))
                except WebSocketClosed as exc:
                    raise ConnectionLostError("the connection closed while sending") from exc
                await reply.done.wait()
            if scope.cancelled_caught:
                raise RequestTimeout(f"no reply within {self.request_timeout} s")
        finally:
            del self._replies[rid]
        if reply.error is not None:
            raise reply.error
        if isinstance(reply.frame, f.Err):
            err = reply.frame
            retry = None if err.retry_after is None else err.retry_after / 1000
            raise RequestError(err.code, err.message, err.limiter, retry)
        assert reply.frame is not None
        return reply.frame.data

    async def _wait_connected(self) -> None:
        if self._ready.is_set():
            return
        if self._closed or self._fatal is not None:
            raise self._fatal or NotConnectedError("the client is closed")
        if self.fail_fast:
            raise NotConnectedError("not connected (fail_fast is on)")
        if self._waiting >= self.buffer_limit:
            raise BufferFullError(f"{self.buffer_limit} requests already wait for the connection")
        self._waiting += 1
        try:
            await self._wait_ready_or_stopped()
        finally:
            self._waiting -= 1
        if not self._ready.is_set():
            raise self._fatal or NotConnectedError("the client is closed")

    # -- handlers -----------------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(msg)`` for every app event named ``event`` (``"*"``: all of them)."""
        self._handlers["msg:" + event].append(handler)

    def once(self, event: str, handler: Handler) -> None:
        """Like :meth:`on`, for the next such event only."""

        def one_shot(msg: f.Msg) -> None:
            self.off(event, one_shot)
            handler(msg)

        self.on(event, one_shot)

    def off(self, event: str | None = None, handler: Handler | None = None) -> None:
        """Remove one handler, every handler of an event, or (no arguments) all app handlers."""
        if event is None:
            for key in [k for k in self._handlers if k.startswith("msg:")]:
                del self._handlers[key]
        elif handler is None:
            self._handlers.pop("msg:" + event, None)
        else:
            handlers = self._handlers.get("msg:" + event, [])
            if handler in handlers:
                handlers.remove(handler)

    def on_join(self, handler: Handler) -> None:
        """``handler(event: MemberEvent)`` when a member joins one of our channels."""
        self._handlers["member_join"].append(handler)

    def on_leave(self, handler: Handler) -> None:
        self._handlers["member_leave"].append(handler)

    def on_update(self, handler: Handler) -> None:
        self._handlers["member_update"].append(handler)

    def on_recover(self, handler: Handler) -> None:
        """``handler(event: Recovered)`` after each rejoin of a channel this client had a
        position in (after a reconnect, or a join with ``recover``)."""
        self._handlers["recover"].append(handler)

    def on_connect(self, handler: Handler) -> None:
        """``handler(conn_id)`` after every successful (re)connection."""
        self._handlers["connect"].append(handler)

    def on_disconnect(self, handler: Handler) -> None:
        """``handler(code, reason)`` when a connection ends."""
        self._handlers["disconnect"].append(handler)

    def on_reconnect_attempt(self, handler: Handler) -> None:
        """``handler(attempt)`` before each reconnection attempt (1, 2, ...)."""
        self._handlers["reconnect_attempt"].append(handler)

    def on_error(self, handler: Handler) -> None:
        """``handler(exc)`` when a connection attempt fails or a rejoin is refused."""
        self._handlers["error"].append(handler)

    def on_user_event(self, handler: Handler) -> None:
        """``handler(event: UserEvent)`` for events about this connection's own user
        (``event.kind``: signin, signout, profile_update, password_change, ...)."""
        self._handlers["user_event"].append(handler)

    def on_session_ended(self, handler: Handler) -> None:
        """``handler(exc: ConnectionClosedError)`` when the server ends this client's session
        (4016) or disconnects it (4017). The client stops: it does not reconnect with a token
        the server will refuse; open a new client with a new token."""
        self._handlers["session_ended"].append(handler)

    def _emit(self, key: str, *args: Any) -> None:
        for handler in list(self._handlers.get(key, ())):
            try:
                handler(*args)
            except Exception:
                log.exception("rtcore client: %s handler %r raised", key, handler)

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self.events()

    def events(self, maxsize: int = 1000) -> EventStream:
        """An iterator over every event from now on: Msg, MemberEvent, UserEvent, Connected,
        Disconnected. It raises EventOverflowError once ``maxsize`` events are unread."""
        return EventStream(self, maxsize)

    def _publish(self, event: Event) -> None:
        for stream in list(self._streams):
            stream.put(event)

    # -- the connection manager ---------------------------------------------------------------

    async def _run(self, first_error: list[BaseException]) -> None:
        attempt = 0
        try:
            with anyio.CancelScope() as self._cancel:
                while not self._closed:
                    code, reason = await self._connect_once(first_error)
                    if code in FATAL_CLOSE_CODES:
                        self._fatal = ConnectionClosedError(code, reason)
                        if code in (CloseCode.SESSION_ENDED, CloseCode.DISCONNECTED):
                            self._emit("session_ended", self._fatal)
                        self._emit("error", self._fatal)
                        return
                    if self._closed or not self.reconnect:
                        return
                    # A connection that got as far as ready resets the backoff.
                    attempt = 1 if self._was_ready else attempt + 1
                    self._was_ready = False
                    bound = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
                    await anyio.sleep(random.uniform(0, bound))
                    self._emit("reconnect_attempt", attempt)
        finally:
            self._stopped.set()
            for stream in list(self._streams):
                stream.end()

    async def _connect_once(self, first_error: list[BaseException]) -> tuple[int, str]:
        """One connection's life; returns its close code and reason."""
        code, reason = 1006, "connection failed"
        try:
            async with anyio.create_task_group() as tasks:
                try:
                    with anyio.fail_after(self.connect_timeout):
                        self._ws = ws = await self._connect()
                        await self._await_welcome(ws)
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
                    self._emit("error", exc)
                    if isinstance(exc, RemoteProtocolError) and self._ws is not None:
                        await self._ws.abort(_close_code_for(exc), exc.message)
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            was_ready = self._ready.is_set()
            if self._ws is not None:
                with anyio.CancelScope(shield=True):
                    await self._ws.abort(CloseCode.GOING_AWAY, "client stopped")
            self._ws = None
            self._members.forget()  # a new connection is a new member: listings start afresh
            if was_ready:
                self._ready = anyio.Event()
            for reply in self._replies.values():
                reply.error = ConnectionLostError(f"connection lost ({code}): {reason}")
                reply.done.set()
        self._emit("disconnect", code, reason)
        self._publish(Disconnected(code, reason))
        return code, reason

    async def _connect(self) -> WebSocket:
        """TCP (and TLS), the upgrade, and the hello: pipelined with the upgrade request, or
        sent after the 101 when ``pipeline_hello`` is off."""
        hello = codec.encode(
            f.Hello(
                PROTOCOL_VERSION,
                self.app,
                self.key,
                self.token,
                self.profile,
                self.echo,
                ("presence_diffs", "history") if self.presence_diffs else ("history",),
            )
        )
        ws = await connect(
            self.url,
            ssl_context=self.ssl_context,
            max_message_size=self.max_message_size,
            first_message=hello if self.pipeline_hello else None,
        )
        if not self.pipeline_hello:
            try:
                await ws.send_message(hello)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await ws.abort(CloseCode.GOING_AWAY, "client stopped")
                raise
        return ws

    async def _await_welcome(self, ws: WebSocket) -> None:
        welcome = codec.decode(_binary(await ws.get_message()), allowed=codec.SERVER_TYPES)
        if not isinstance(welcome, f.Welcome):
            raise RemoteProtocolError(f"expected welcome, got {type(welcome).__name__}")
        self.welcome, self.id = welcome, welcome.conn

    async def _rejoin(self, reconnected: bool) -> None:
        """Rejoin remembered channels (recovering from their positions), then release
        buffered requests."""
        for channel, echo in list(self.channels.items()):
            try:
                await self._request(
                    functools.partial(_join_request, channel, echo, self.positions.get(channel)),
                    buffered=False,
                    on_ok=functools.partial(self._track, channel),
                )
            except RequestError as exc:
                self.channels.pop(channel, None)
                self._emit("error", exc)
            except (ConnectionLostError, RequestTimeout, NotConnectedError):
                return
        self._was_ready = True
        self._ready.set()
        assert self.id is not None
        self._emit("connect", self.id)
        self._publish(Connected(self.id, reconnected))

    async def _read(self, ws: WebSocket) -> None:
        while True:
            data = _binary(await ws.get_message())
            self._dispatch(codec.decode(data, allowed=codec.SERVER_TYPES))

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, f.Ok | f.Err):
            reply = self._replies.get(frame.id) if frame.id is not None else None
            if reply is not None:
                reply.frame = frame
                reply.done.set()
                if reply.on_ok is not None and isinstance(frame, f.Ok):
                    reply.on_ok(frame.data)
            elif isinstance(frame, f.Err):
                self._emit("error", RequestError(frame.code, frame.message))
        elif isinstance(frame, f.Msg):
            if frame.offset is not None and frame.channel is not None and self._seen(frame):
                return
            self._emit("msg:" + frame.event, frame)
            self._emit("msg:*", frame)
            self._publish(frame)
        elif isinstance(frame, f.MemberEvent):
            self._member_event(frame)
        elif isinstance(frame, f.PresenceDiff):
            for event in member_events(frame):
                if self.echo or event.member["id"] != self.id:
                    self._member_event(event)
                else:
                    self._members.apply(event)
        elif isinstance(frame, f.UserEvent):
            self._emit("user_event", frame)
            self._publish(frame)

    def _seen(self, msg: f.Msg) -> bool:
        """Whether ``msg`` (of a channel with history) was received already; else it becomes
        the channel's position. A message of another epoch means the server lost the stream
        this client was following: told as a Recovered event that did not recover."""
        assert msg.channel is not None and msg.offset is not None
        was = self.positions.get(msg.channel)
        epoch = msg.epoch or ""
        if was is not None and was.epoch == epoch and msg.offset <= was.offset:
            return True
        now = self.positions[msg.channel] = Position(epoch, msg.offset)
        if was is not None and was.epoch != epoch:
            event = Recovered(msg.channel, False, "epoch_changed", now)
            self._emit("recover", event)
            self._publish(event)
        return False

    def _member_event(self, event: f.MemberEvent) -> None:
        self._members.apply(event)
        self._emit(event.kind, event)
        self._publish(event)


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


def _current_loop() -> object:
    """An object identifying the running event loop (anyio's native token).

    Raises:
        EventLoopError: no trio or asyncio event loop is running in this thread.
    """
    try:
        return anyio.lowlevel.current_token().native_token
    except anyio.NoEventLoopError:
        raise EventLoopError(
            "rtcore.client needs a running trio or asyncio event loop "
            f"(thread {threading.current_thread().name!r} has none)"
        ) from None
    except ImportError:  # anyio has no backend for the running library (curio, ...)
        raise EventLoopError("rtcore.client runs under trio or asyncio only") from None


def _loop_name() -> str:
    """``the trio event loop of thread 'MainThread'``: for error messages."""
    backend = anyio.lowlevel.current_token().backend_class.__module__  # anyio._backends._trio
    library = backend.rpartition("._")[2]
    return f"the {library} event loop of thread {threading.current_thread().name!r}"


def _members_request(channel: str, after: int | None, limit: int, rid: int) -> f.GetMembers:
    return f.GetMembers(rid, channel, after, limit)


def _refresh_request(token: str, rid: int) -> f.Refresh:
    return f.Refresh(rid, token)


def _join_request(channel: str, echo: bool | None, recover: Position | None, rid: int) -> f.Join:
    return f.Join(rid, channel, echo, None if recover is None else recover.to_wire())


def _history_request(
    channel: str, since: Position | None, limit: int, reverse: bool, rid: int
) -> f.History:
    wire = None if since is None else since.to_wire()
    return f.History(rid, channel, wire, limit, reverse or None)


def _set(positions: dict[str, Position], channel: str, position: Position | None) -> None:
    if position is None:
        positions.pop(channel, None)
    else:
        positions[channel] = position


@attrs.frozen
class HistoryPage:
    """A page of a channel's history (:meth:`Client.history`)."""

    messages: list[f.Msg]
    top: Position
    """The channel stream's epoch and latest offset when the page was read."""
    next: Position | None
    """Where the next page starts (the ``since`` to pass), or None after the last page."""

    @classmethod
    def from_reply(cls, data: Any) -> HistoryPage:
        try:
            messages = [codec.msg_from_map(m) for m in data["messages"]]
            nxt = data["next"]
            return cls(
                messages,
                Position(data["epoch"], data["offset"]),
                None if nxt is None else Position(nxt["epoch"], nxt["offset"]),
            )
        except (KeyError, TypeError) as exc:
            raise RemoteProtocolError(f"a malformed history reply: {exc!r}") from exc


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[Client]:
    """Connect to ``url`` and yield a :class:`Client`; closes it on exit.

    Works under trio and asyncio. ``options`` are :class:`Client`'s keyword arguments.
    Exceptions come out as raised (not wrapped in an exception group by the client's
    internal task group).
    """
    client = Client(url, **options)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as nursery:
            try:
                await client.open(nursery)
            except Exception as exc:
                failure = exc
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield client
                finally:
                    with anyio.CancelScope(shield=True):
                        await client.aclose()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failure is not None:
        raise failure
