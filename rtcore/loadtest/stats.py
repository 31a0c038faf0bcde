"""Counts a load process keeps, per second and in all, and how they add up: over the load
processes of a run, and over runs from several machines (``rtcore loadtest combine``).

Latencies go into a log-bucketed histogram (each bucket 2% wider than the one before, from
1 µs), so histograms add up exactly across processes and machines and percentiles come out
within 2%, whatever the number of samples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

GROWTH = 1.02
"""Each latency bucket's upper bound over the previous one's."""
FLOOR = 1e-6
"""The first bucket's upper bound, seconds."""


def bucket(seconds: float) -> int:
    """The histogram bucket of a latency (0: at most 1 µs, or negative from clock skew)."""
    if seconds <= FLOOR:
        return 0
    return math.ceil(math.log(seconds / FLOOR) / math.log(GROWTH))


def bucket_upper(index: int) -> float:
    """A bucket's upper bound, seconds."""
    return FLOOR * GROWTH**index


def merge_hist(into: dict[int, int], other: dict[Any, int]) -> dict[int, int]:
    """Add ``other`` (keys may be strings, as JSON has them) into ``into``."""
    for key, count in other.items():
        k = int(key)
        into[k] = into.get(k, 0) + count
    return into


def percentile(hist: dict[int, int], p: float) -> float | None:
    """The ``p``-th percentile (0-100) in seconds: the upper bound of the bucket holding it;
    None without samples."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for key in sorted(hist):
        seen += hist[key]
        if seen >= rank:
            return bucket_upper(key)
    return bucket_upper(max(hist))


def summary(hist: dict[int, int]) -> dict[str, Any]:
    """Samples and the percentiles a report shows, in milliseconds."""
    out: dict[str, Any] = {"samples": sum(hist.values())}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100)):
        value = percentile(hist, p)
        out[name] = None if value is None else round(value * 1000, 4)
    return out


class Second:
    """What happened in one second of the run, in one load process."""

    __slots__ = ("opened", "deliveries", "sent", "refusals", "closes", "hist", "open")

    def __init__(self) -> None:
        self.opened = 0
        self.deliveries = 0
        self.sent = 0
        self.refusals: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.hist: dict[int, int] = {}
        self.open = 0
        """Connections open (ready) at the end of the second."""

    def to_json(self, t: int) -> dict[str, Any]:
        return {
            "t": t,
            "open": self.open,
            "opened": self.opened,
            "deliveries": self.deliveries,
            "sent": self.sent,
            "refusals": dict(self.refusals),
            "closes": dict(self.closes),
            "latency": {str(k): v for k, v in self.hist.items()},
        }


def merge_series(many: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Series of several processes or machines, second by second (aligned on each run's
    start): counts add up, and so do the open connections."""
    by_t: dict[int, dict[str, Any]] = {}
    for series in many:
        for row in series:
            into = by_t.setdefault(row["t"], _empty_row(row["t"]))
            for key in ("open", "opened", "deliveries", "sent"):
                into[key] += row[key]
            for key in ("refusals", "closes"):
                into[key] = dict(Counter(into[key]) + Counter(row[key]))
            into["latency"] = merge_hist(into["latency"], row["latency"])
    rows = [by_t[t] for t in sorted(by_t)]
    for row in rows:
        row["latency"] = {str(k): v for k, v in row["latency"].items()}
    return rows


def _empty_row(t: int) -> dict[str, Any]:
    return {
        "t": t,
        "open": 0,
        "opened": 0,
        "deliveries": 0,
        "sent": 0,
        "refusals": {},
        "closes": {},
        "latency": {},
    }


def add_counters(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = Counter(a)
    out.update(b)
    return dict(out)
