"""Prometheus metrics of one server: ``GET /metrics`` on the server-API port.

Two halves, both in a registry of the server's own (several servers in one process -- the
test suite runs many -- never share or clash):

* :class:`StatisticsCollector` reads the statistics records (and the channel tables, for the
  gauges) when Prometheus scrapes, so counters cost nothing between scrapes beyond the integer
  adds the records already make.
* :class:`ServerMetrics` is also an :class:`~rtcore.observe.Observer`: it fills the
  histograms that need each event -- flush pass duration and batch size, the publish-to-write
  latency, connection durations. Events arrive per flush pass and per connection, never per
  delivery.

The metric names and what they count are documented in docs/api.md ("Operating").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rtcore.observe.events import (
    Closed,
    Connected,
    FlusherStatistics,
    FlushPass,
    ServerStatistics,
)

if TYPE_CHECKING:
    from rtcore.core.app import App
    from rtcore.core.outbox import Pending
    from rtcore.engines.base import Broker
    from rtcore.engines.redis.ops import BrokerStatistics

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of :meth:`ServerMetrics.exposition` (Prometheus text format)."""

SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COUNTS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)
BYTES = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
LIFETIMES = (1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600)


class Flushing(Protocol):
    """What the metrics read of the flusher."""

    @property
    def statistics(self) -> FlusherStatistics: ...


class RedisCounters(Protocol):
    """What the metrics read of the Redis broker."""

    @property
    def statistics(self) -> BrokerStatistics: ...

    @property
    def queued(self) -> int: ...


class Measured(Protocol):
    """What the metrics read of a server, at scrape time and per flush pass (the Server is one;
    declared here so that observe/ does not depend on the server it observes)."""

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def pending(self) -> Pending: ...

    @property
    def connections(self) -> Sized: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def redis(self) -> RedisCounters | None: ...

    @property
    def statistics(self) -> ServerStatistics: ...

    @property
    def flusher(self) -> Flushing: ...


def queued_totals(server: Measured) -> tuple[int, int]:
    """Deliveries and bytes queued for clients so far (a sum over apps, not deliveries)."""
    deliveries, queued = 0, server.pending.bytes_pushed
    for app in server.apps.values():
        s = app.statistics
        deliveries += s.message_deliveries + s.presence_deliveries + s.user_event_deliveries
        queued += s.bytes_queued
    return deliveries, queued


class StatisticsCollector:
    """Counters and gauges read from the server at scrape time (a prometheus_client Collector)."""

    def __init__(self, server: Measured) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        yield from self._app_counters()
        yield from self._server_counters()

    def _gauges(self) -> Iterator[Metric]:
        server = self._server
        yield from self._app_gauges()
        yield GaugeMetricFamily(
            "rtcore_open_sockets",
            "WebSocket-port connections open, established or still in their handshake",
            value=len(server.connections),
        )
        up = GaugeMetricFamily(
            "rtcore_broker_up", "1 when the broker can deliver, else 0", labels=["broker"]
        )
        up.add_metric([type(server.broker).__name__], 0 if server.broker.health() else 1)
        yield up
        yield from self._redis_metrics()

    def _app_gauges(self) -> Iterator[Metric]:
        conns = GaugeMetricFamily(
            "rtcore_connections", "Established connections (hello accepted), by app", labels=["app"]
        )
        channels = GaugeMetricFamily(
            "rtcore_channels", "Channels with members, by app", labels=["app"]
        )
        members = GaugeMetricFamily(
            "rtcore_members",
            "Channel memberships (a connection in 3 channels counts 3), by app",
            labels=["app"],
        )
        for name, app in self._server.apps.items():
            table = app.table.channels()
            conns.add_metric([name], len(app.table))
            channels.add_metric([name], len(table))
            members.add_metric([name], sum(map(len, table.values())))
        yield from (conns, channels, members)

    def _redis_metrics(self) -> Iterator[Metric]:
        redis = self._server.redis
        if redis is None:
            return
        stats = redis.statistics
        for name, value, doc in (
            ("published", stats.published, "Writes to Redis (publications, presence, control)"),
            ("received", stats.received, "Envelopes received from Redis pub/sub"),
            ("dropped", stats.dropped, "Operations not forwarded (Redis away or queue full)"),
            ("reconnects", stats.reconnects, "Times Redis became unreachable"),
        ):
            yield CounterMetricFamily(f"rtcore_broker_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "rtcore_broker_queued", "Writes waiting for Redis", value=redis.queued
        )

    def _app_counters(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "rtcore_messages_in", "Messages published (send, broadcast), by app", labels=["app"]
        )
        deliveries = CounterMetricFamily(
            "rtcore_deliveries",
            "Recipients of publications (each publication adds its recipient count), by kind",
            labels=["app", "kind"],
        )
        refusals = CounterMetricFamily(
            "rtcore_refusals", "Error replies to client requests, by code", labels=["app", "code"]
        )
        limited = CounterMetricFamily(
            "rtcore_rate_limited", "Requests refused by a rate limiter", labels=["app", "limiter"]
        )
        for name, app in self._server.apps.items():
            stats = app.statistics
            messages.add_metric([name], stats.messages)
            deliveries.add_metric([name, "message"], stats.message_deliveries)
            deliveries.add_metric([name, "presence"], stats.presence_deliveries)
            deliveries.add_metric([name, "user_event"], stats.user_event_deliveries)
            for code, count in sorted(stats.refusals.items()):
                refusals.add_metric([name, code], count)
            for limiter, count in sorted(stats.rate_limited.items()):
                limited.add_metric([name, limiter], count)
        yield from (messages, deliveries, refusals, limited)
        yield from self._access_counters()

    def _access_counters(self) -> Iterator[Metric]:
        """Refusals by an API key's restrictions and the channel rules, and removals."""
        permissions = CounterMetricFamily(
            "rtcore_permission_refusals",
            "Operations the channel rules refused, by operation and reason",
            labels=["app", "op", "reason"],
        )
        removals = CounterMetricFamily(
            "rtcore_channel_removals",
            "Connections the server took out of a channel (the left push), by reason",
            labels=["app", "reason"],
        )
        keys = CounterMetricFamily(
            "rtcore_key_refusals",
            "Hellos refused by an API key's restrictions, by reason (key_not_realtime, "
            "origin_missing, origin_not_allowed, ip_not_allowed)",
            labels=["app", "reason"],
        )
        for name, app in self._server.apps.items():
            stats = app.statistics
            for reason, count in sorted(stats.key_refusals.items()):
                keys.add_metric([name, reason], count)
            for (op, reason), count in sorted(stats.permission_refusals.items()):
                permissions.add_metric([name, op, reason], count)
            for reason, count in sorted(stats.channel_removals.items()):
                removals.add_metric([name, reason], count)
        yield from (keys, permissions, removals)

    def _server_counters(self) -> Iterator[Metric]:
        server = self._server
        stats, flushed = server.statistics, server.flusher.statistics
        yield CounterMetricFamily(
            "rtcore_connections_accepted", "TCP connections accepted", value=stats.accepted
        )
        closed = CounterMetricFamily(
            "rtcore_connections_closed",
            "Connections ended, by WebSocket close code (none: there never was a WebSocket)",
            labels=["code"],
        )
        for label, count in sorted(stats.closed.items()):
            closed.add_metric([label], count)
        yield closed
        yield CounterMetricFamily(
            "rtcore_bytes_out",
            "Bytes of frames queued for clients (publications times recipients, replies, pings)",
            value=queued_totals(server)[1],
        )
        yield CounterMetricFamily(
            "rtcore_slow_consumers",
            "Connections closed for exceeding their outbound budget (4008)",
            value=flushed.slow_consumers,
        )
        requests = CounterMetricFamily(
            "rtcore_api_requests",
            "Server-API requests answered, by status and code (ok, or the error code)",
            labels=["status", "code"],
        )
        for (status, error), count in sorted(stats.api_requests.items()):
            requests.add_metric([str(status), error], count)
        yield requests


class Buckets:
    """A histogram observed from one thread (the flusher's): a bisect and an add.

    prometheus_client's ``Histogram`` takes a lock per update, which the flush pass does not
    need and should not pay for; this keeps the same buckets (upper bounds, ``le``) and is
    exported through prometheus_client's ``HistogramMetricFamily`` at scrape time.
    """

    __slots__ = ("name", "doc", "bounds", "counts", "sum")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            cumulative.append((bound, float(total)))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.sum)


class ServerMetrics:
    """A server's Prometheus registry, and the observer that fills its histograms."""

    def __init__(self, server: Measured) -> None:
        self._server = server
        self._queued = (0, 0)
        """Deliveries and bytes queued until the previous flush pass."""
        self.flush_seconds = Buckets(
            "rtcore_flush_pass_seconds", "Duration of a flush pass (its writes)", SECONDS
        )
        self.flush_connections = Buckets(
            "rtcore_flush_pass_connections", "Connections a flush pass visited", COUNTS
        )
        self.flush_bytes = Buckets(
            "rtcore_flush_pass_bytes", "Bytes queued for clients since the previous pass", BYTES
        )
        self.flush_deliveries = Buckets(
            "rtcore_flush_pass_deliveries",
            "Deliveries (publication recipients) queued since the previous flush pass",
            COUNTS,
        )
        self.latency = Buckets(
            "rtcore_publish_write_latency_seconds",
            "Per flush pass: from its oldest publication being queued to the pass writing it",
            LATENCY,
        )
        self.lifetimes = Buckets(
            "rtcore_connection_duration_seconds",
            "How long connections lasted, from TCP accept to close",
            LIFETIMES,
        )
        self.registry = CollectorRegistry()
        self.registry.register(StatisticsCollector(server))
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def collect(self) -> Iterator[Metric]:
        """The histograms (a prometheus_client Collector)."""
        for histogram in (
            self.flush_seconds,
            self.flush_connections,
            self.flush_bytes,
            self.flush_deliveries,
            self.latency,
            self.lifetimes,
        ):
            yield histogram.family()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (the body of ``GET /metrics``)."""
        return generate_latest(self.registry)

    # -- Observer ---------------------------------------------------------------------------

    def flush_pass(self, event: FlushPass) -> None:
        self.flush_seconds.observe(event.duration)
        self.flush_connections.observe(event.connections)
        queued = queued_totals(self._server)
        # An app removed by a reload takes its counts along: then start over from there.
        self.flush_deliveries.observe(max(0, queued[0] - self._queued[0]))
        self.flush_bytes.observe(max(0, queued[1] - self._queued[1]))
        self._queued = queued
        if event.latency is not None:
            self.latency.observe(event.latency)

    def closed(self, event: Closed) -> None:
        self.lifetimes.observe(event.duration)

    def connected(self, event: Connected) -> None:
        pass  # the connection gauges are read from the channel tables at scrape time

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        pass  # counted in the app's statistics

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        pass  # counted in the app's statistics

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        pass  # counted in the flusher's statistics
