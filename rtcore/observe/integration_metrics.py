"""Prometheus metrics of the apps' hooks and webhooks (docs/hooks.md, docs/operations):
read at scrape time from the server's ``integrations`` (rtcore.server.integrations)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

BREAKER_STATES = ("closed", "open", "half_open")


class Integrated(Protocol):
    """What this reads (rtcore.server.integrations.Integrations): hook clients by app and
    webhook endpoints by (app, settings); each with ``statistics``."""

    @property
    def hooks(self) -> Mapping[str, Any]: ...

    @property
    def endpoints(self) -> Mapping[Any, Any]: ...


class IntegrationCollector:
    def __init__(self, integrations: Integrated, now: Any) -> None:
        self._integrations = integrations
        self._now = now
        """The monotonic clock the breakers run on (trio's)."""

    def collect(self) -> Iterator[Metric]:
        yield from self._hooks()
        yield from self._webhooks()

    def _hooks(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "rtcore_hook_calls",
            "Hook calls by outcome (allow, deny, unavailable, breaker_open)",
            labels=["app", "hook", "outcome"],
        )
        latency = HistogramMetricFamily(
            "rtcore_hook_latency_seconds", "Answered hook calls' latency", labels=["app", "hook"]
        )
        breaker = GaugeMetricFamily(
            "rtcore_hook_breaker_state",
            "1 for the breaker's current state",
            labels=["app", "state"],
        )
        opened = CounterMetricFamily(
            "rtcore_hook_breaker_opened", "Times the breaker opened", labels=["app"]
        )
        flight = GaugeMetricFamily("rtcore_hook_in_flight", "Hook calls in flight", labels=["app"])
        for app, client in self._integrations.hooks.items():
            stats = client.statistics
            for (kind, outcome), n in stats.outcomes.items():
                calls.add_metric([app, kind, outcome], n)
            for kind, counts in stats.latency_buckets.items():
                bounds = client.latency_bounds
                buckets = [(str(b), c) for b, c in zip(bounds, counts, strict=True)]
                buckets.append(("+Inf", stats.latency_count[kind]))
                latency.add_metric([app, kind], buckets, stats.latency_sum[kind])
            state = client.breaker.state(self._now())
            for name in BREAKER_STATES:
                breaker.add_metric([app, name], 1 if name == state else 0)
            opened.add_metric([app], client.breaker.opened_total)
            flight.add_metric([app], stats.in_flight)
        yield from (calls, latency, breaker, opened, flight)

    def _webhooks(self) -> Iterator[Metric]:
        labels = ["app", "url"]
        depth = GaugeMetricFamily("rtcore_webhook_queue_depth", "Events waiting", labels=labels)
        families = {
            "delivered": CounterMetricFamily(
                "rtcore_webhook_delivered", "Events delivered", labels=labels
            ),
            "requests": CounterMetricFamily(
                "rtcore_webhook_requests", "Delivery tries (requests)", labels=labels
            ),
            "retries": CounterMetricFamily(
                "rtcore_webhook_retries", "Tries after a failed one", labels=labels
            ),
            "failed": CounterMetricFamily(
                "rtcore_webhook_failed", "Events dropped after their last try", labels=labels
            ),
        }
        dropped = CounterMetricFamily(
            "rtcore_webhook_dropped", "Events dropped: the queue was full", labels=labels
        )
        for endpoint in self._integrations.endpoints.values():
            key = [endpoint.app, endpoint.settings.url]
            depth.add_metric(key, len(endpoint.queue))
            dropped.add_metric(key, endpoint.queue.dropped)
            for name, family in families.items():
                family.add_metric(key, getattr(endpoint.statistics, name))
        yield depth
        yield dropped
        yield from families.values()
