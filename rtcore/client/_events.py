"""What a client's event iterators yield, the iterator itself, and the set of them a client
publishes to (:class:`Listeners`: what the iterators need of their client comes in as
callbacks, so this module does not import the client)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio
import anyio.lowlevel
import attrs

from rtcore.client.errors import ConnectionClosedError, EventOverflowError
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position


@attrs.frozen
class Connected:
    """Iterator event: the client is connected (again) as member ``conn``."""

    conn: str
    reconnected: bool


@attrs.frozen
class Disconnected:
    """Iterator event: the connection ended with this close code (1006 if none was received)."""

    code: int
    reason: str


@attrs.frozen
class Recovered:
    """Iterator event: how a channel's rejoin after a reconnect went (protocol.md §4.4.1).

    ``recovered``: every message published while the client was away was replayed (before
    this event, in order, each once). Otherwise ``reason`` says why not (``gap_too_old``,
    ``epoch_changed``, ``history_off``, ``too_many``, ``forbidden``, ``already_joined``): the
    messages in between are lost to this client, which should reload the channel's state.
    ``position`` is where the client now is in the channel's stream.
    """

    channel: str
    recovered: bool
    reason: str | None
    position: Position | None


@attrs.frozen
class Rejoining:
    """Iterator event: a channel's rejoin after a reconnect was refused for a passing reason
    (``reason``: ``broker_unavailable``, ``rate_limited``, or ``request_timeout`` when no reply
    came); the client keeps the channel and tries again (``attempt`` is the next try's number)
    with backoff until it is joined (a :class:`Recovered` event follows for a channel with a
    position) or the connection ends (then the reconnect rejoins it)."""

    channel: str
    reason: str
    attempt: int


Event = (
    f.Msg
    | f.MemberEvent
    | f.PresencePaused
    | f.PresenceResumed
    | f.UserEvent
    | f.Left
    | f.Joined
    | f.Gap
    | Connected
    | Disconnected
    | Recovered
    | Rejoining
)


class EventStream:
    """An async iterator over a client's events, registered from the moment it is created.

    Raises ``EventOverflowError`` when it falls ``maxsize`` events behind (rather than
    blocking the reader or skipping events), and ``ConnectionClosedError`` when the server
    closed the connection for good. Ends when the client is closed.
    """

    # A deque and a wake-up event rather than a memory channel: an iterator the application
    # abandons half-way must not need closing (anyio's streams warn when left unclosed).

    def __init__(self, listeners: Listeners, maxsize: int) -> None:
        self._listeners = listeners
        self._queue: deque[Event] = deque()
        self._arrived = anyio.Event()
        self._maxsize = maxsize
        self._ended = False
        self.overflowed = False
        listeners.streams.add(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        self._listeners.check_loop()
        await anyio.lowlevel.checkpoint()
        while not self._queue:
            if self._ended:
                self.close()
                if self.overflowed:
                    raise EventOverflowError(f"the iterator fell {self._maxsize} events behind")
                fatal = self._listeners.fatal()
                if fatal is not None:
                    raise fatal
                raise StopAsyncIteration
            await self._arrived.wait()
            self._arrived = anyio.Event()
        return self._queue.popleft()

    def put(self, event: Event) -> None:
        if self._ended:
            return
        if len(self._queue) >= self._maxsize:
            self.overflowed = True
            self.end()
            return
        self._queue.append(event)
        self._arrived.set()

    def end(self) -> None:
        """No more events: the iterator finishes once it has read what is queued."""
        self._ended = True
        self._listeners.streams.discard(self)
        self._arrived.set()

    def close(self) -> None:
        """Stop listening and drop what is queued."""
        self.end()
        self._queue.clear()


class Listeners:
    """A client's open event iterators, which its reader publishes every event to.

    Args:
        check_loop: raises ``EventLoopError`` unless called from the client's event loop.
        fatal: why the server closed the connection for good, once it has (else None).
    """

    __slots__ = ("streams", "check_loop", "fatal")

    def __init__(
        self,
        check_loop: Callable[[], None],
        fatal: Callable[[], ConnectionClosedError | None],
    ) -> None:
        self.streams: set[EventStream] = set()
        self.check_loop = check_loop
        self.fatal = fatal

    def publish(self, event: Event) -> None:
        for stream in list(self.streams):
            stream.put(event)

    def end_all(self) -> None:
        """The client stopped: each iterator finishes once it has read what is queued."""
        for stream in list(self.streams):
            stream.end()
