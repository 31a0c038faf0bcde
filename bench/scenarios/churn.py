"""churn: a churner joins and leaves an N-member channel P times; presence deliveries."""

from __future__ import annotations

import argparse
from typing import Any

from bench import peers
from bench.harness import fleet, gather, split
from bench.scenarios import Subparsers
from bench.tables import median_run, report


def run_churn(kind: str, n: int, pairs: int, procs: int) -> dict[str, Any]:
    with fleet(kind, n, procs, "churn", publisher="churner") as (server, subs, pub):
        assert pub is not None
        expected = 2 * pairs * n
        timeout = expected / 20_000 + 30
        cpu0 = server.cpu_seconds()
        for s, share in zip(subs, split(n, procs), strict=True):
            s.call("count", expected=2 * pairs * share, timeout=timeout)
        pub.call("churn", channel="churn", pairs=pairs, timeout=timeout)
        started = pub.result(timeout + 30)["start"]
        got = gather(subs, timeout)
        seconds = got["last"] - started
        return {
            "server": kind,
            "N": n,
            "pairs": pairs,
            "expected": expected,
            "deliveries": got["total"],
            "seconds": seconds,
            "joins": pairs / seconds,
            "rate": got["total"] / seconds,
            "cpu": (server.cpu_seconds() - cpu0) / seconds,
        }


def churn(
    servers: list[str], args: argparse.Namespace, n: int, pairs: int, pairs_base: int
) -> None:
    rows = [
        median_run(args.runs, run_churn, k, n, pairs_base if k == "naive" else pairs, args.procs)
        for k in servers
    ]
    report(
        f"\n## presence churn: join+leave pairs into a {n}-member channel\n",
        rows,
        [
            ("server", "server", ""),
            ("pairs", "pairs", "d"),
            ("joins", "joins/s", ",.0f"),
            ("rate", "presence deliveries/s", ",.0f"),
            ("cpu", "server CPU", ".0%"),
        ],
    )


def add_parser(sub: Subparsers) -> None:
    h = sub.add_parser("churn", help="joins/leaves per second into an N-member channel")
    h.add_argument("-n", "--members", type=int, default=1000)
    h.add_argument("--pairs", type=int, default=1000, help="join+leave pairs")
    h.add_argument("--baseline-pairs", type=int, default=100)


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    if any(peers.is_peer(s) for s in servers):
        parser.error("churn measures presence, which the peers (node-ws, c-ceiling) do not have")
    churn([s for s in servers if s != "raw"], args, args.members, args.pairs, args.baseline_pairs)
