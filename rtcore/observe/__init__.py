"""Observability: the seam (``events``: statistics records and the observer, sans-IO), its
exporters (``logs``: log lines; ``metrics``: Prometheus) and ``log_config`` (how ``rtcore
serve`` sets up Python logging)."""

from __future__ import annotations

from rtcore.observe.events import (
    ABNORMAL_CLOSE,
    NO_CLOSE,
    NULL_OBSERVER,
    AppStatistics,
    Closed,
    Connected,
    FlusherStatistics,
    FlushPass,
    NullObserver,
    ObservedApp,
    Observer,
    Observers,
    ServerStatistics,
    permission_refused,
    rate_limited,
    refused,
    removed,
)

__all__ = [
    "ABNORMAL_CLOSE",
    "NO_CLOSE",
    "NULL_OBSERVER",
    "AppStatistics",
    "Closed",
    "Connected",
    "FlushPass",
    "FlusherStatistics",
    "NullObserver",
    "ObservedApp",
    "Observer",
    "Observers",
    "ServerStatistics",
    "permission_refused",
    "rate_limited",
    "refused",
    "removed",
]
