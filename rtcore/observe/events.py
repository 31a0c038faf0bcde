"""The observability seam: statistics records and the observer (sans-IO).

Theory of operation:

* **Statistics** are plain counters on the objects that do the work: :class:`ServerStatistics`
  on the server, :class:`FlusherStatistics` on the flusher, :class:`AppStatistics` on each app.
  They are always on, cost an integer add where they are kept, and are read when someone asks
  (a Prometheus scrape). Counting never happens per delivery: an app adds the recipient count
  (and bytes) each publication returns, and the flusher counts the connections of a pass from
  the sizes of the groups it takes.
* The **observer** is told about events: a connection established or closed, a refused or
  rate-limited request, a slow consumer, a flush pass. Its default does nothing. Exporters plug
  in here -- :mod:`rtcore.observe.logs` writes log lines, :mod:`rtcore.observe.metrics` fills
  Prometheus histograms -- and :class:`Observers` hands each event to several of them.
* Nothing here reads a clock or does I/O: durations and latencies arrive measured by the
  transport, so the core (app, session) can report through the same seam.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from rtcore.protocol.codes import CloseCode

NO_CLOSE = 0
"""The close code recorded for a connection that never had a WebSocket (refused upgrade,
a peer that went away during the handshake). Real close codes are 1000 and above."""
ABNORMAL_CLOSE = 1006
"""RFC 6455's code for a connection that ended without a closing handshake."""


CLIENT_OTHER = "client_other"
"""The label of every close code that is not one of protocol.md §7's (a client chose it)."""
_KNOWN_CLOSE_CODES = frozenset(int(c) for c in CloseCode) | {ABNORMAL_CLOSE}


def close_label(code: int) -> str:
    """A close code as a metric label: ``none`` (no WebSocket), one of protocol.md §7's codes
    (or 1006), else :data:`CLIENT_OTHER`: a client may close with any code from 1000 to
    4999, and a label per code would let it create series without bound."""
    if code == NO_CLOSE:
        return "none"
    return str(code) if code in _KNOWN_CLOSE_CODES else CLIENT_OTHER


# -- statistics records -------------------------------------------------------------------------


@attrs.define(slots=True)
class ServerStatistics:
    """Counters of one server since it started."""

    accepted: int = 0
    """TCP connections accepted on the WebSocket listeners."""
    closed: dict[str, int] = attrs.field(factory=dict)
    """Connections ended, by :func:`close_label` of their close code: a bounded set of
    labels, whatever codes clients send."""
    api_requests: dict[tuple[int, str], int] = attrs.field(factory=dict)
    """Server-API (HTTP) requests answered, by (status, code): code is ``ok`` for a 2xx, else
    the error code of the body."""

    def count_close(self, code: int) -> None:
        label = close_label(code)
        self.closed[label] = self.closed.get(label, 0) + 1

    def count_api_request(self, status: int, code: str) -> None:
        key = (status, code)
        self.api_requests[key] = self.api_requests.get(key, 0) + 1


@attrs.define(slots=True)
class FlusherStatistics:
    """Counters of the flusher since it started, added to once per pass."""

    passes: int = 0
    connections: int = 0
    """Connections the flush passes visited (each pass counts the connections it took)."""
    slow_consumers: int = 0
    """Connections closed for exceeding their outbound budget."""


@attrs.define(slots=True)
class AppStatistics:
    """Counters of one app since it was created."""

    messages: int = 0
    """Messages published (send and broadcast, from clients, the server API or the host)."""
    message_deliveries: int = 0
    """Recipients of those messages: the sum of each publication's recipient count."""
    presence_deliveries: int = 0
    """Recipients of presence events (member_join, member_leave, member_update)."""
    user_event_deliveries: int = 0
    """Connections that received a user event."""
    bytes_queued: int = 0
    """Bytes of the app's publications queued for their recipients: each publication adds
    its framed size times its recipient count."""
    refusals: dict[str, int] = attrs.field(factory=dict)
    """Error replies to client requests, by error code (``rate_limited`` included)."""
    rate_limited: dict[str, int] = attrs.field(factory=dict)
    """Requests a rate limiter refused, by limiter name (an error reply or, for a client that
    kept going, the close)."""
    key_refusals: dict[str, int] = attrs.field(factory=dict)
    """Hellos an API key's restrictions refused, by reason (one of
    ``rtcore.core.restrictions.REFUSAL_REASONS``)."""
    permission_refusals: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """Operations the channel rules refused, by ``(operation, reason)``: both from fixed
    sets (rtcore.core.permissions.OPERATIONS, REFUSAL_REASONS)."""
    channel_removals: dict[str, int] = attrs.field(factory=dict)
    """Connections the server took out of a channel (the ``left`` push), by reason."""


# -- events -------------------------------------------------------------------------------------


@attrs.frozen
class Connected:
    """A connection's hello was accepted: it is a member of ``app`` now."""

    conn: str
    remote: str
    app: str
    user: str | None


@attrs.frozen
class Closed:
    """A connection ended (every accepted connection ends exactly once)."""

    conn: str
    remote: str
    app: str | None
    """None when it never got past the hello."""
    code: int
    """The WebSocket close code; :data:`NO_CLOSE` if there never was a WebSocket,
    :data:`ABNORMAL_CLOSE` if the peer vanished without a closing handshake."""
    reason: str
    duration: float
    """Seconds from TCP accept to the end."""


@attrs.frozen
class FlushPass:
    """What one flush pass did."""

    duration: float
    """Seconds the pass took (the writes, not the batching wait before it)."""
    connections: int
    """Connections the pass visited: the members of the groups it took (a channel's, for a
    message) and the single outboxes (replies, pings). Counted per group, not per connection."""
    latency: float | None
    """Seconds from the oldest publication of the pass being queued to the pass writing it;
    None for a pass that found nothing new."""


class Observer(Protocol):
    """Told about what happens on a server; every method must be cheap and must not raise."""

    def connected(self, event: Connected) -> None: ...

    def closed(self, event: Closed) -> None: ...

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        """A request of connection ``conn`` got an error reply with ``code``."""

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        """``limiter`` refused an ``operation`` of connection ``conn``."""

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        """A connection had ``queued`` bytes waiting, over its budget: it is being closed."""

    def flush_pass(self, event: FlushPass) -> None: ...


class NullObserver:
    """The default observer: ignores everything."""

    def connected(self, event: Connected) -> None:
        pass

    def closed(self, event: Closed) -> None:
        pass

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        pass

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        pass

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        pass

    def flush_pass(self, event: FlushPass) -> None:
        pass


NULL_OBSERVER: Observer = NullObserver()


class Observers:
    """Hands every event to each of several observers, in order."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def connected(self, event: Connected) -> None:
        for o in self.observers:
            o.connected(event)

    def closed(self, event: Closed) -> None:
        for o in self.observers:
            o.closed(event)

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        for o in self.observers:
            o.refused(conn, app, code, operation)

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        for o in self.observers:
            o.rate_limited(conn, app, limiter, operation)

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        for o in self.observers:
            o.slow_consumer(conn, remote, queued)

    def flush_pass(self, event: FlushPass) -> None:
        for o in self.observers:
            o.flush_pass(event)


# -- what the core reports (one call per refusal, never per delivery) -----------------------------


class ObservedApp(Protocol):
    """What reporting a refusal needs of an app (``rtcore.core.app.App`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def statistics(self) -> AppStatistics: ...

    @property
    def observer(self) -> Observer: ...


def refused(app: ObservedApp, conn: str, code: str, operation: str) -> None:
    """Count and report an error reply to a client request of ``app``."""
    refusals = app.statistics.refusals
    refusals[code] = refusals.get(code, 0) + 1
    app.observer.refused(conn, app.name, code, operation)


def permission_refused(app: ObservedApp, operation: str, reason: str) -> None:
    """Count a refusal by the channel rules (its error reply is counted by :func:`refused`)."""
    counts = app.statistics.permission_refusals
    key = (operation, reason)
    counts[key] = counts.get(key, 0) + 1


def removed(app: ObservedApp, reason: str) -> None:
    """Count a connection taken out of a channel (protocol.md §5.6) for ``reason``."""
    counts = app.statistics.channel_removals
    counts[reason] = counts.get(reason, 0) + 1


def rate_limited(
    app: ObservedApp, conn: str, limiter: str, operation: str, *, replied: bool
) -> None:
    """Count and report a rate-limit refusal; ``replied``: it got an error reply (rather than
    the close of a client that kept going)."""
    counts = app.statistics.rate_limited
    counts[limiter] = counts.get(limiter, 0) + 1
    if replied:
        refusals = app.statistics.refusals
        refusals["rate_limited"] = refusals.get("rate_limited", 0) + 1
    app.observer.rate_limited(conn, app.name, limiter, operation)
