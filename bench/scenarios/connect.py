"""connect: K connections (upgrade, hello, welcome); rate and RSS per idle connection."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from bench import peers
from bench.harness import LoadProc, ServerProc, split, subscriber
from bench.scenarios import Subparsers
from bench.tables import check_meaningful, progress, table


def run_connect(kind: str, n: int, procs: int) -> dict[str, Any]:
    server = ServerProc(kind)
    subs: list[LoadProc] = []
    try:
        warm = subscriber(server.address, 10, None)
        warm.result()
        time.sleep(0.5)
        rss0 = server.rss_bytes()
        start = time.monotonic()
        for share in split(n, procs):
            subs.append(subscriber(server.address, share, None))
        setup = max(s.result() for s in subs)
        elapsed = time.monotonic() - start
        time.sleep(1.0)
        rss1 = server.rss_bytes()
        warm.stop()
        return {
            "server": kind,
            "N": n,
            "seconds": elapsed,
            "setup": setup,
            "rate": n / elapsed,
            "rss_per_conn": (rss1 - rss0) / n,
            "rss_mb": rss1 / 2**20,
        }
    finally:
        for s in subs:
            s.stop()
        server.stop()


def connect(servers: list[str], args: argparse.Namespace, counts: list[int]) -> None:
    rows = []
    for n in counts:
        procs = max(args.procs, math.ceil(n / 5000))
        for k in servers:
            progress(f"connect {k}, {n:,} connections ...")
            rows.append(run_connect(k, n, procs))
    print("\n## connect: connections opened (upgrade + hello), RSS per idle connection\n")
    print(
        table(
            rows,
            [
                ("server", "server", ""),
                ("N", "connections", ",d"),
                ("rate", "connections/s", ",.0f"),
                ("rss_per_conn", "RSS/conn bytes", ",.0f"),
                ("rss_mb", "server RSS MB", ".0f"),
                *vs_node(rows),
            ],
            baseline="",
        )
    )
    check_meaningful(rows)


def vs_node(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """With node-ws in the run: each row's RSS per idle connection and rate as multiples of
    Node's at the same N (the issue's target: RSS per connection at 10,000 <= Node's)."""
    node = {r["N"]: r for r in rows if r["server"] == peers.NODE_BASELINE}
    if not node:
        return []
    for r in rows:
        base = node.get(r["N"])
        r["rss_vs_node"] = f"{r['rss_per_conn'] / base['rss_per_conn']:.2f}x" if base else "—"
        r["rate_vs_node"] = f"{r['rate'] / base['rate']:.2f}x" if base else "—"
    return [("rss_vs_node", "RSS/conn vs node-ws", ""), ("rate_vs_node", "rate vs node-ws", "")]


def add_parser(sub: Subparsers) -> None:
    c = sub.add_parser("connect", help="connection rate and RSS per idle connection")
    c.add_argument("--counts", default="1000,5000,10000")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    connect([s for s in servers if s != "raw"], args, [int(x) for x in args.counts.split(",")])
