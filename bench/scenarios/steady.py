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
        s.call("count", expected=share * int(rate * seconds), timeout=seconds + 15, sample_every=7)
    pub.call("steady", rate=rate, seconds=seconds, pad=pad_for(size))
    sent = pub.result(seconds + 60)
    got = gather([s for s, _ in subs], seconds + 15)
    elapsed = got["last"] - sent["start"]
    lat = sorted(got["latencies"])
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
        "samples": len(lat),
        **cpu_spent(cpu0, servers, elapsed),
        "rss_mb": sum(s.rss_bytes() for s in servers) / 2**20,
    }


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
            ("samples", "samples", "d"),
            ("cpu", "server CPU", ".0%"),
        ],
    )


def add_parser(sub: Subparsers) -> None:
    s = sub.add_parser("steady", help="a steady publish rate; latency percentiles")
    s.add_argument("-n", "--subscribers", type=int, default=1000)
    s.add_argument("--rate", type=float, default=200.0, help="messages per second published")
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--size", type=int, default=110)


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    steady(servers, args, args.subscribers, args.rate, args.seconds, args.size)
