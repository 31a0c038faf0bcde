"""nodes-burst and nodes-steady: rtcore nodes over a private Redis (``bench.cluster``)
compared with one node in the same invocation."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import cluster
from bench.harness import LoadProc, quiesce, split, subscriber
from bench.scenarios import Subparsers
from bench.scenarios.burst import measure_burst
from bench.scenarios.steady import measure_steady
from bench.tables import interleaved_runs, median_run, report
from rtcore.loadtest import counting as load

LAYOUTS = {
    "memory": (1, False, "1 node, memory broker"),
    "redis-1": (1, True, "1 node over Redis"),
    "redis-2": (2, True, "2 nodes over Redis"),
}
"""``--layouts`` names: (nodes, over Redis, the row's label)."""
REDIS_COMMANDS = ("publish", "spublish")
"""The commands that carry a channel message across nodes."""
PROCS = {"n": 1}
"""Subscriber load processes per node (``--procs``)."""


@contextmanager
def node_fleet(
    layout: str, n: int, procs: int, remote: bool
) -> Iterator[
    tuple[list[cluster.Node], cluster.RedisServer | None, list[tuple[Any, int]], Any, list[int]]
]:
    """A private Redis (for a Redis layout), its nodes, subscribers, the publisher, and how
    many subscribers each node has.

    The publisher (a member, echo off) is on the first node; the ``n`` subscribers are split
    evenly across the nodes, or with ``remote`` all on the last one (``procs`` load processes
    per node that has subscribers)."""
    count, over_redis, _ = LAYOUTS[layout]
    redis: cluster.RedisServer | None = None
    nodes: list[cluster.Node] = []
    subs: list[tuple[Any, int]] = []
    pub = None
    try:
        redis = _private_redis() if over_redis else None
        for _ in range(count):
            nodes.append(cluster.Node(redis.url if redis else None))
        for node in nodes:
            node.await_ready()
        placed = [0] * (count - 1) + [n] if remote else split(n, count)
        _start_subscribers(nodes, placed, procs, subs)
        pub = LoadProc(load.publisher_main, nodes[0].address, "bench", True)
        pub.result()
        quiesce([*(s for s, _ in subs), pub])
        yield nodes, redis, subs, pub, placed
    finally:
        for p in [*(s for s, _ in subs), *([pub] if pub else [])]:
            p.stop()
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()


def _private_redis() -> cluster.RedisServer:
    binary = cluster.redis_binary()
    if binary is None:
        raise SystemExit("the nodes-* scenarios need redis-server (on PATH)")
    return cluster.RedisServer(binary)


def _start_subscribers(
    nodes: list[cluster.Node], placed: list[int], procs: int, subs: list[tuple[Any, int]]
) -> None:
    """Each node's ``placed`` subscribers over ``procs`` load processes, appended to ``subs``
    as they start (so that the caller stops them whatever happens), and ready."""
    for node, share in zip(nodes, placed, strict=True):
        for k in split(share, procs) if share else []:
            subs.append((subscriber(node.address, k, "bench"), k))
    for s, _ in subs:
        s.result()


def run_nodes(layout: str, part: str, n: int, *shape: Any) -> dict[str, Any]:
    """One ``burst`` (shape: messages, size) or ``steady`` (rate, seconds, size) run of a
    layout; with Redis, what Redis spent and how many publishes it saw, too."""
    remote = part == "steady"  # cross-node latency: every subscriber on the other node
    with node_fleet(layout, n, PROCS["n"], remote) as (nodes, redis, subs, pub, placed):
        calls0 = redis.command_calls() if redis else {}
        redis_cpu0 = redis.cpu_seconds() if redis else 0.0
        writes0 = sum(node.write_calls() for node in nodes)
        measure = measure_burst if part == "burst" else measure_steady
        row: dict[str, Any] = {"server": LAYOUTS[layout][2], **measure(nodes, subs, pub, *shape)}
        row["placed"] = " + ".join(map(str, placed))  # the publisher is on the first node
        row["cpu_per_m"] = row["cpu_seconds"] / max(1, row["deliveries"]) * 1e6
        writes = sum(node.write_calls() for node in nodes) - writes0
        row["per_write"] = row["deliveries"] / max(1, writes)  # how well passes batch
        if redis is not None:
            calls = redis.command_calls()
            sent = row["M"] if part == "burst" else int(shape[0] * shape[1])
            row["publishes"] = sum(calls.get(c, 0) - calls0.get(c, 0) for c in REDIS_COMMANDS)
            row["per_message"] = row["publishes"] / sent
            row["redis_cpu_per_m"] = (
                (redis.cpu_seconds() - redis_cpu0) / max(1, row["deliveries"]) * 1e6
            )
            row["redis"] = redis.version()
        return row


def run_nodes_steady(layout: str, n: int, *shape: Any) -> dict[str, Any]:
    return run_nodes(layout, "steady", n, *shape)


def nodes_burst(args: argparse.Namespace, layouts: list[str], n: int, m: int, size: int) -> None:
    rows = interleaved_runs(
        args.runs,
        layouts,
        lambda k: run_nodes(k, "burst", n, m, size),
        scenario="nodes burst",
        medians=("cpu_per_m", "redis_cpu_per_m"),
    )
    _vs_one_node(rows)
    report(
        f"\n## nodes burst: {n} subscribers in one channel split across the nodes, the publisher "
        f"on the first, ~{size}-byte messages{_redis_note(rows)}\n",
        rows,
        [
            ("server", "layout", ""),
            ("placed", "subscribers per node", ""),
            ("M", "messages", "d"),
            ("deliveries", "deliveries", ",d"),
            ("seconds", "s", ".3f"),
            ("rate", "deliveries/s", ",.0f"),
            ("cpu_each", "server CPU per node", ""),
            ("cpu_per_m", "server CPU s per M deliveries", ".3f"),
            ("per_write", "deliveries per write", ".1f"),
            ("redis_cpu_per_m", "Redis CPU s per M", ".4f"),
            ("per_message", "Redis publishes per message", ".3f"),
            ("rate_ratio", "rate vs 1 node", ".2f"),
            ("cpu_ratio", "CPU/M vs 1 node", ".2f"),
        ],
        baseline="",
    )
    print("\nserver CPU s per M deliveries, the median over the runs (CPU/M vs 1 node is theirs):")
    for r in rows:
        print(f"- {r['server']}: {r['cpu_per_m_median']:.3f}")
    _nodes_targets(rows, n)


def _vs_one_node(rows: list[dict[str, Any]]) -> None:
    """Ratios to the one-node memory run's: of the median rates, and of the medians over the
    runs of the server CPU per delivery (robust to a machine busy with other work)."""
    base = next((r for r in rows if r["server"] == LAYOUTS["memory"][2]), None)
    for r in rows:
        r.setdefault("redis_cpu_per_m", math.nan)
        r.setdefault("per_message", math.nan)
        r["rate_ratio"] = _ratio(r["rate"], base["rate"]) if base else math.nan
        r["cpu_ratio"] = (
            _ratio(r["cpu_per_m_median"], base["cpu_per_m_median"]) if base else math.nan
        )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # a tiny run may spend less than a clock tick


def _redis_note(rows: list[dict[str, Any]]) -> str:
    version = next((r["redis"] for r in rows if "redis" in r), None)
    return f" (Redis {version}, private, 127.0.0.1, no persistence)" if version else ""


def _nodes_targets(rows: list[dict[str, Any]], n: int) -> None:
    """The issue's targets for two nodes, met or not, from this invocation's medians."""
    two = next((r for r in rows if r["server"] == LAYOUTS["redis-2"][2]), None)
    if two is None:
        return
    checks = [
        (f"one Redis publish per message: {two['per_message']:.3f}", two["per_message"] == 1.0),
        (f"2 nodes >= 2 M deliveries/s at {n} subscribers: {two['rate']:,.0f}", two["rate"] >= 2e6),
        (f"2 nodes' server CPU per delivery <= 1.25x 1 node's: {two['cpu_ratio']:.2f}x",
         two["cpu_ratio"] <= 1.25),
        (f"2 nodes' rate not lower than 1 node's: {two['rate_ratio']:.2f}x",
         two["rate_ratio"] >= 1.0),
    ]  # fmt: skip
    print("\ntargets (issue 10; ratios to the 1-node memory run):")
    for text, met in checks:
        verdict = "not measured" if "nan" in text else "met" if met else "NOT MET"
        print(f"- {text.replace('nanx', '—')}: {verdict}")


def nodes_steady(
    args: argparse.Namespace, layouts: list[str], n: int, rate: float, seconds: float, size: int
) -> None:
    rows = [  # at a fixed offered rate, the median run is the one with the median p99
        median_run(args.runs, run_nodes_steady, k, n, rate, seconds, size, key="p99")
        for k in layouts
    ]
    for r in rows:
        r.setdefault("per_message", math.nan)
    report(
        f"\n## nodes steady: {n} subscribers, {rate:g} msgs/s for {seconds:g} s "
        f"(offered {n * rate:,.0f} deliveries/s), ~{size}-byte messages; with 2 nodes the "
        f"publisher is on one and every subscriber on the other{_redis_note(rows)}\n",
        rows,
        [
            ("server", "layout", ""),
            ("placed", "subscribers per node", ""),
            ("deliveries", "deliveries", ",d"),
            ("rate", "deliveries/s", ",.0f"),
            ("p50", "p50 ms", ".2f"),
            ("p99", "p99 ms", ".2f"),
            ("p999", "p99.9 ms", ".2f"),
            ("samples", "samples", "d"),
            ("cpu_each", "server CPU per node", ""),
            ("cpu_per_m", "server CPU s per M deliveries", ".3f"),
            ("per_write", "deliveries per write", ".1f"),
            ("per_message", "Redis publishes per message", ".3f"),
        ],
        baseline="",
    )
    two = next((r for r in rows if r["server"] == LAYOUTS["redis-2"][2]), None)
    if two is not None:
        met = two["p99"] <= 10.0
        print(
            f"\ntarget (issue 10): cross-node p99 <= 10 ms at {n * rate:,.0f} deliveries/s: "
            f"{two['p99']:.2f} ms: {'met' if met else 'NOT MET'}"
        )


def add_parser(sub: Subparsers) -> None:
    """Both subcommands: ``nodes-burst`` and ``nodes-steady``."""
    layouts = (
        f"layouts to run, comma-separated, of: {', '.join(LAYOUTS)} (1 node with the memory "
        "broker, 1 or 2 nodes over a private redis-server)"
    )
    nb = sub.add_parser(
        "nodes-burst", help="rtcore nodes over Redis: a burst, subscribers split across nodes"
    )
    nb.add_argument("-n", "--subscribers", type=int, default=1000)
    nb.add_argument("-m", "--messages", type=int, default=2000)
    nb.add_argument("--size", type=int, default=110, help="delivered frame size, bytes")
    nb.add_argument("--layouts", default="memory,redis-2", help=layouts)
    ns = sub.add_parser(
        "nodes-steady", help="rtcore nodes over Redis: cross-node latency at a steady rate"
    )
    ns.add_argument("-n", "--subscribers", type=int, default=50)
    ns.add_argument("--rate", type=float, default=2000.0, help="messages per second published")
    ns.add_argument("--seconds", type=float, default=10.0)
    ns.add_argument("--size", type=int, default=110)
    ns.add_argument("--layouts", default="memory,redis-2", help=layouts)


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    chosen = args.layouts.split(",")
    if unknown := [k for k in chosen if k not in LAYOUTS]:
        parser.error(f"--layouts: unknown {', '.join(unknown)} (of: {', '.join(LAYOUTS)})")
    if any(LAYOUTS[k][1] for k in chosen) and cluster.redis_binary() is None:
        parser.error("the Redis layouts need redis-server on PATH (apt-get install redis-server)")
    if args.flush_window != 0.002:
        print("note: nodes run `rtcore serve` with its flush window (0.002 s)\n")
    if args.scenario == "nodes-burst":
        nodes_burst(args, chosen, args.subscribers, args.messages, args.size)
    else:
        nodes_steady(args, chosen, args.subscribers, args.rate, args.seconds, args.size)
