"""steady: a publisher sends R messages/s for D seconds; latency percentiles."""

from __future__ import annotations

import argparse
import math
from typing import Any

from bench.harness import LoadProc, cpu_spent, fleet, gather, pad_for, server_cpu, split
from bench.scenarios import Subparsers
from bench.tables import median_run, report


def run_steady(
    kind: str, n: int, rate: float, seconds: float, size: int, procs: int
) -> dict[str, Any]:
    with fleet(kind, n, procs, "bench", publisher="publisher") as (server, subs, pub):
        assert pub is not None
        shares = list(zip(subs, split(n, procs), strict=True))
        return {"server": kind, **measure_steady([server], shares, pub, rate, seconds, size)}


def measure_steady(
    servers: list[Any],
    subs: list[tuple[Any, int]],
    pub: LoadProc,
    rate: float,
    seconds: float,
    size: int,
) -> dict[str, Any]:
    """``rate`` messages/s for ``seconds`` from ``pub`` to ``subs``; latency percentiles."""
    n = sum(share for _, share in subs)
    expected = int(rate * seconds) * n
    cpu0 = server_cpu(servers)
    for s, share in subs:
        owed = share * int(rate * seconds)
        # every 7th frame, fewer in long runs: the C client keeps at most 2M samples
        every = max(7, math.ceil(owed / 1_500_000))
        s.call("count", expected=owed, timeout=seconds + 15, sample_every=every)
    pub.call("steady", rate=rate, seconds=seconds, pad=pad_for(size))
    sent = pub.result(seconds + 60)
    got = gather([s for s, _ in subs], seconds + 15)
    elapsed = got["last"] - sent["start"]
    lat = sorted(got["latencies"])
    worst = window_maxima(got["latencies"], got["sampled_at"], sent["start"], WINDOW)
    return {
        "N": n,
        "rate_in": rate,
        "size": size,
        "expected": expected,
        "deliveries": got["total"],
        "rate": got["total"] / elapsed,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "p999": pct(lat, 99.9),
        "max": lat[-1] * 1000 if lat else math.nan,
        "windows": f"{sum(w > SLOW_MS for w in worst)}/{len(worst)}",
        "window_max": worst,
        "samples": len(lat),
        **cpu_spent(cpu0, servers, elapsed),
        "rss_mb": sum(s.rss_bytes() for s in servers) / 2**20,
    }


WINDOW = 10.0
"""Seconds per window of the worst-latency count (``windows``)."""
SLOW_MS = 10.0
"""A window whose worst sampled delivery took longer than this (ms) counts as a slow one."""


def window_maxima(
    latencies: list[float], sampled_at: list[float], start: float, window: float
) -> list[float]:
    """The worst sampled latency (ms) in each ``window`` seconds from ``start``; empty when
    the load side gave no sample times (the Python load before it did)."""
    if len(sampled_at) != len(latencies):
        return []
    worst: dict[int, float] = {}
    for lat, when in zip(latencies, sampled_at, strict=True):
        k = max(0, int((when - start) // window))
        worst[k] = max(worst.get(k, 0.0), lat * 1000)
    return [worst.get(k, 0.0) for k in range(max(worst, default=-1) + 1)]


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k] * 1000


def steady(
    servers: list[str], args: argparse.Namespace, n: int, rate: float, seconds: float, size: int
) -> None:
    rows = [  # at a fixed offered rate, the median run is the one with the median p99
        median_run(args.runs, run_steady, k, n, rate, seconds, size, args.procs, key="p99")
        for k in servers
    ]
    report(
        f"\n## steady: {n} subscribers, {rate:g} msgs/s for {seconds:g} s "
        f"(offered {n * rate:,.0f} deliveries/s), ~{size}-byte messages\n",
        rows,
        [
            ("server", "server", ""),
            ("deliveries", "deliveries", ",d"),
            ("rate", "deliveries/s", ",.0f"),
            ("p50", "p50 ms", ".2f"),
            ("p99", "p99 ms", ".2f"),
            ("p999", "p99.9 ms", ".2f"),
            ("max", "max ms", ".2f"),
            ("windows", f"{WINDOW:g} s windows with max > {SLOW_MS:g} ms", ""),
            ("samples", "samples", "d"),
            ("cpu", "server CPU", ".0%"),
        ],
    )
    for row in rows:
        worst = ", ".join(f"{w:.1f}" for w in row["window_max"])
        print(f"{row['server']}: worst sampled delivery per {WINDOW:g} s window, ms: {worst}")


def add_parser(sub: Subparsers) -> None:
    s = sub.add_parser("steady", help="a steady publish rate; latency percentiles")
    s.add_argument("-n", "--subscribers", type=int, default=1000)
    s.add_argument("--rate", type=float, default=200.0, help="messages per second published")
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--size", type=int, default=110)


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    steady(servers, args, args.subscribers, args.rate, args.seconds, args.size)
