"""The client library (the protocol.md client, with reconnects), for trio and asyncio.

It is written against anyio, so it runs in whichever of trio or asyncio is running (trio
natively; asyncio through anyio's asyncio backend), over wsproto (see ``_websocket``). A client
belongs to the event loop that opened it: using it from another loop or thread raises
:class:`EventLoopError` rather than failing somewhere inside the event loop.

This module is the public face, :class:`Client`; its parts, each in its own module:

- ``_link``: the connection manager (connect, hello, welcome, rejoin, read, dispatch,
  reconnect with backoff) and the wait for the connection of requests made while away;
- ``_requests``: requests in flight and their replies, the request frames, history pages;
- ``_channels``: the channels to rejoin, their positions in their message streams
  (recovery), and their member lists (``_presence``);
- ``_handlers``, ``_registrations`` and ``_events``: the registered handlers, their
  registration methods, and the event iterators;
- ``_websocket``: the WebSocket itself.

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

After an unexpected close the client reconnects with jittered exponential backoff. Close
codes that reconnecting cannot fix (``FATAL_CLOSE_CODES``) end the client with
:class:`ConnectionClosedError`. While disconnected, requests wait for the connection (at most
``buffer_limit`` of them) or, with ``fail_fast``, raise :class:`NotConnectedError` at once.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from rtcore.client._channel_tokens import ChannelTokenProvider, ChannelTokens
from rtcore.client._channels import Channels
from rtcore.client._events import EventStream, Listeners, Recovered
from rtcore.client._handlers import Handlers
from rtcore.client._link import FATAL_CLOSE_CODES, Link
from rtcore.client._presence import Member
from rtcore.client._registrations import Registrations
from rtcore.client._requests import (
    HistoryPage,
    OnOk,
    history_request,
    members_request,
    refresh_request,
)
from rtcore.client._websocket import parse_url
from rtcore.client.errors import EventLoopError, NotConnectedError
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

if TYPE_CHECKING:
    import asyncio

    import trio

    TaskSpawner = trio.Nursery | anyio.abc.TaskGroup | asyncio.TaskGroup

__all__ = ["FATAL_CLOSE_CODES", "Client", "HistoryPage", "open_client"]


class Client(Registrations):
    """A connection to an rtcore server, kept open across network failures.

    Runs under trio and asyncio. Most code uses :func:`open_client`; ``Client(...)`` plus
    :meth:`open` suits code that manages its own nursery or task group. Every method must be
    called from the event loop (and so the thread) that opened the client.

    The keyword arguments stay attributes of the client, read whenever they are needed
    (``token`` and ``profile`` are updated by :meth:`refresh` and :meth:`update_profile`).

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
        channel_token: ``channel -> token`` (a function or a coroutine function): a channel
            token (protocol.md §4.4.2) from the app's backend, or None to join without one.
            Asked on every join and rejoin, and before a held token expires (then sent
            with a per-channel ``refresh``).
        connect_data: for the app's connect hook (docs/hooks.md): sent as the hello's
            ``data`` on every connection and reconnection.

    Raises:
        ValueError: ``url`` is not a ws:// or wss:// URL.
    """

    # (The signature alone is 21 lines: one keyword argument a line, as documented above.)
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
        channel_token: ChannelTokenProvider | None = None,
        connect_data: Any = None,
    ) -> None:
        parse_url(url)
        self.url, self.app, self.key, self.token, self.profile = url, app, key, token, profile
        self.echo, self.reconnect, self.fail_fast = echo, reconnect, fail_fast
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.request_timeout, self.connect_timeout = request_timeout, connect_timeout
        self.buffer_limit, self.max_message_size = buffer_limit, max_message_size
        self.ssl_context, self.connect_data = ssl_context, connect_data
        self.pipeline_hello, self.presence_diffs = pipeline_hello, presence_diffs
        self._handlers = Handlers()
        self._listeners = Listeners(self._check_loop, lambda: self._link.fatal)
        self._channels = Channels(self._report_recovery)
        self._tokens = ChannelTokens(channel_token)
        self._link = Link(self, self._channels, self._handlers, self._listeners, self._tokens)
        self._loop: object | None = None
        """The event loop that opened the client (anyio's native token for it)."""
        self._loop_name = ""

    @property
    def id(self) -> str | None:
        """This connection's member id (changes on reconnect)."""
        return self._link.id

    @property
    def welcome(self) -> f.Welcome | None:
        """The server's welcome to the latest connection."""
        return self._link.welcome

    @property
    def channels(self) -> dict[str, bool | None]:
        """Channels to rejoin after a reconnect, with their join echo option."""
        return self._channels.rejoin

    @channels.setter
    def channels(self, channels: dict[str, bool | None]) -> None:
        self._channels.rejoin = channels

    @property
    def positions(self) -> dict[str, Position]:
        """Per joined channel with history: the last message received there (its epoch and
        offset), or the channel's top at the join. Rejoins recover from it."""
        return self._channels.positions

    @positions.setter
    def positions(self, positions: dict[str, Position]) -> None:
        self._channels.positions = positions

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
            start_soon(self._link.run, first)
        else:  # asyncio.TaskGroup
            nursery.create_task(self._link.run(first))  # type: ignore[union-attr]
        await self._link.wait_ready_or_stopped()
        if not self._link.ready.is_set():
            raise self._link.fatal or (first[0] if first else NotConnectedError("client closed"))

    async def aclose(self) -> None:
        """Close the connection (code 1000, waiting up to ``connect_timeout`` for the
        server's close frame) and stop reconnecting."""
        self._check_loop()
        link = self._link
        link.closed = True
        ws = link.ws
        if ws is not None:
            with anyio.move_on_after(self.connect_timeout):
                await ws.aclose()
        if link.cancel is not None:
            link.cancel.cancel()
        self._listeners.end_all()

    def is_connected(self) -> bool:
        """Connected, welcomed and rejoined: requests are sent at once."""
        return self._link.ready.is_set()

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
        self,
        channel: str,
        echo: bool | None = None,
        recover: Position | None = None,
        *,
        data: Any = None,
    ) -> bool:
        """Join a channel; returns False if already a member. Rejoined after reconnects,
        recovering what was missed if the channel keeps history.

        ``recover``: a position in the channel's stream (say, ``positions[channel]`` saved by
        an earlier run): the server replays what followed it before the ``ok``, and a
        :class:`Recovered` event says whether that was everything.

        ``data``: for the app's join hook (docs/hooks.md), sent as the join's ``data``; the
        rejoins after reconnects send it again.
        """
        self._check_loop()
        self._channels.joining(channel, recover)
        reply = await self._link.join(channel, echo, recover, data)
        self._channels.rejoin[channel] = echo
        _set_or_drop(self._channels.join_data, channel, data)
        return bool(reply["joined"])

    async def leave(self, channel: str, echo: bool | None = None) -> bool:
        """Leave a channel; returns False if not a member."""
        self._channels.left(channel)
        self._tokens.cancel(channel)
        data = await self._request(lambda rid: f.Leave(rid, channel, echo))
        return bool(data["left"])

    async def get_members(self, channel: str, page_size: int = 1000) -> list[Member]:
        """Every member of the channel as ``{"id", "user", "data"}`` (fetched page by page,
        ``page_size`` at a time, at most the server's ``max_members_page``).

        For a joined channel the pages are also merged into :meth:`members`' list.
        """
        members: list[Member] = []
        after: int | None = None
        merge = functools.partial(self._channels.members.merge_page, channel)
        while True:
            limit = page_size
            if self.welcome is not None:  # the server's own bound, from the welcome frame
                limit = min(limit, self.welcome.limits.get("max_members_page", limit))
            page = functools.partial(members_request, channel, after, limit)
            data = await self._request(page, on_ok=merge)
            members.extend(data["members"])
            after = data["next"]
            if after is None:
                return members

    def members(self, channel: str) -> list[Member]:
        """The joined channel's members as this client knows them (``{"id", "user", "data"}``),
        kept current by presence events; empty for a channel not joined.

        Complete once :meth:`get_members` has listed the channel since the join (and since
        the last reconnect, which starts the lists afresh); without a listing it holds the
        members whose joins this connection has seen. Needs the channel's presence events.
        """
        return self._channels.members.members(channel)

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
            functools.partial(history_request, channel, since, limit, reverse)
        )
        return HistoryPage.from_reply(data)

    async def update_profile(self, data: object, echo: bool | None = None) -> int:
        """Replace the profile; returns how many channels were told. Kept across reconnects."""
        self.profile = data
        result = await self._request(lambda rid: f.UpdateProfile(rid, data, echo))
        return int(result["channels"])

    async def send(
        self, channel: str, event: str, data: object = None, echo: bool | None = None
    ) -> dict[str, Any]:
        """Send an event to a joined channel; returns ``{"mid", "ts", "recipients"}``."""
        await self._link.channel_ready(channel)  # a rejoin being retried: after it
        return await self._request(lambda rid: f.Send(rid, channel, event, data, echo))  # type: ignore[no-any-return]

    async def broadcast(
        self, event: str, data: object = None, echo: bool | None = None
    ) -> dict[str, Any]:
        """Send an event to every connection of the app; returns ``{"mid", "ts", "recipients"}``."""
        return await self._request(lambda rid: f.Broadcast(rid, event, data, echo))  # type: ignore[no-any-return]

    async def refresh(self, token: str) -> float | None:
        """Hand the server a fresh session token for the same user, before the current one
        expires (apps with ``expire_connections`` close connections whose token expired).
        It is also used for later reconnects. Returns the new expiry (Unix time) or None."""
        result = await self._request(functools.partial(refresh_request, token))
        self.token = token
        return None if result["expires"] is None else result["expires"] / 1000

    async def _request(self, make: Callable[[int], f.Request], *, on_ok: OnOk | None = None) -> Any:
        """Send a request once connected (waiting for the connection, as the settings
        allow); its ``ok``'s data."""
        self._check_loop()
        return await self._link.request(make, on_ok=on_ok)

    def _report_recovery(self, event: Recovered) -> None:
        self._handlers.emit("recover", event)
        self._listeners.publish(event)

    # -- for tests that look inside -------------------------------------------------------

    def _dispatch(self, frame: f.ServerFrame) -> None:
        """Handle one frame as if the server had sent it."""
        self._link.dispatch(frame)

    @property
    def _waiting(self) -> int:
        """How many requests wait for the connection."""
        return self._link.waiting

    @property
    def _replies(self) -> Mapping[int, object]:
        """The requests in flight, by id."""
        return self._link.requests.in_flight

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self.events()

    def events(self, maxsize: int = 1000) -> EventStream:
        """An iterator over every event from now on: Msg, MemberEvent, UserEvent, Left, Joined,
        Connected, Disconnected. It raises EventOverflowError once ``maxsize`` events are
        unread."""
        return EventStream(self._listeners, maxsize)


def _set_or_drop(values: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value


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
