"""burst: N subscribers join one channel; a publisher sends M messages in one write."""

from __future__ import annotations

import argparse
from typing import Any

from bench import peers
from bench.harness import LoadProc, cpu_spent, fleet, gather, pad_for, server_cpu, split
from bench.scenarios import Subparsers
from bench.tables import interleaved_runs, report

SLOW = ("naive", "node-ws")
"""Servers given the baseline's messages (--baseline-messages): tens of times slower than
rtcore, their full burst would take minutes; rates compare."""


def run_burst(kind: str, n: int, messages: int, size: int, procs: int) -> dict[str, Any]:
    with fleet(kind, n, procs, "bench", publisher="publisher") as (server, subs, pub):
        assert pub is not None
        shares = list(zip(subs, split(n, procs), strict=True))
        return {"server": kind, **measure_burst([server], shares, pub, messages, size)}


def measure_burst(
    servers: list[Any], subs: list[tuple[Any, int]], pub: LoadProc, messages: int, size: int
) -> dict[str, Any]:
    """One burst of ``messages`` from ``pub`` to ``subs`` (each with its subscriber count);
    the CPU and RSS are summed over ``servers``."""
    n = sum(share for _, share in subs)
    expected = n * messages
    timeout = expected / 20_000 + 30
    cpu0 = server_cpu(servers)
    for s, share in subs:
        s.call("count", expected=share * messages, timeout=timeout)
    pub.call("burst", messages=messages, pad=pad_for(size), timeout=timeout)
    started = pub.result(timeout + 30)["start"]
    got = gather([s for s, _ in subs], timeout)
    seconds = got["last"] - started
    return {
        "N": n,
        "M": messages,
        "size": size,
        "deliveries": got["total"],
        "expected": expected,
        "seconds": seconds,
        "rate": got["total"] / seconds,
        **cpu_spent(cpu0, servers, seconds),
        "rss_mb": sum(s.rss_bytes() for s in servers) / 2**20,
    }


def burst(
    servers: list[str],
    args: argparse.Namespace,
    n: int,
    m: int,
    size: int,
    m_base: int,
    m_ceiling: int | None = None,
) -> None:
    """``m`` messages; ``m_base`` for the SLOW servers, ``m_ceiling`` (default 5 x ``m``) for
    c-ceiling, whose ``m`` would take too short a time to measure."""
    messages = {**dict.fromkeys(SLOW, m_base), peers.CEILING: m_ceiling or 5 * m}
    rows = interleaved_runs(
        args.runs,
        servers,
        lambda k: run_burst(k, n, messages.get(k, m), size, args.procs),
        scenario="burst",
    )
    report(
        f"## burst: {n} subscribers in one channel, ~{size}-byte messages\n",
        rows,
        [
            ("server", "server", ""),
            ("M", "messages", "d"),
            ("deliveries", "deliveries", ",d"),
            ("seconds", "s", ".3f"),
            ("rate", "deliveries/s", ",.0f"),
            ("cpu", "server CPU", ".0%"),
            ("rss_mb", "server RSS MB", ".0f"),
            *of_ceiling(rows),
        ],
    )


def of_ceiling(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """With c-ceiling in the run: each row's rate as a share of the ceiling's (medians; the
    issue's target: rtcore >= 35% of it), else no column."""
    ceiling = next((r for r in rows if r["server"] == peers.CEILING), None)
    if ceiling is None:
        return []
    for r in rows:
        r["of_ceiling"] = r["rate"] / ceiling["rate"]
    return [("of_ceiling", "of c-ceiling", ".1%")]


def add_parser(sub: Subparsers) -> None:
    b = sub.add_parser("burst", help="N subscribers, a burst of M messages")
    b.add_argument("-n", "--subscribers", type=int, default=1000)
    b.add_argument("-m", "--messages", type=int, default=2000)
    b.add_argument(
        "--baseline-messages",
        type=int,
        default=200,
        help="messages for the naive baseline and node-ws (~50x and ~30x slower than rtcore; "
        "rates compare)",
    )
    b.add_argument(
        "--ceiling-messages",
        type=int,
        default=None,
        help="messages for c-ceiling (default 5 x -m: at -m 2000 it takes ~50 ms; rates compare)",
    )
    b.add_argument("--size", type=int, default=110, help="delivered frame size, bytes")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    burst(
        servers,
        args,
        args.subscribers,
        args.messages,
        args.size,
        args.baseline_messages,
        args.ceiling_messages,
    )
