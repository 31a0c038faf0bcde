"""joins: N clients connect and join one channel, with each presence mode."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from bench import peers
from bench.harness import ServerProc, split, subscriber
from bench.scenarios import Subparsers
from bench.tables import median_run, runs_note, table

JOIN_MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # mode: (server options, hello features)
    "events off": (("--no-presence-events",), ()),
    "diffs": ((), ("presence_diffs",)),
    "member_*": ((), ()),
}
PIPELINED = " pipelined"
"""A mode's suffix: the clients send hello and join right behind the upgrade request (as the
Python client does) instead of after the 101 (as browsers must)."""


def run_joins(mode: str, n: int, procs: int, workers: int = 1) -> dict[str, Any]:
    """N connections (upgrade, hello, join) into one channel, from the first connect to the
    last join's ok, with presence events off, as batched diffs, or one member_* per join; or
    a peer's (``mode`` is its name). ``workers`` > 1: ``rtcore serve --workers`` over a
    private Redis instead (bench.cluster)."""
    pipeline = mode.endswith(PIPELINED)
    server, features, mode = joins_server(mode, workers)
    subs: list[Any] = []
    try:
        cpu0 = server.cpu_seconds()
        start = time.monotonic()
        for share in split(n, procs):
            subs.append(subscriber(server.address, share, "big", features, pipeline))
        setup = max(s.result() for s in subs)
        elapsed = time.monotonic() - start
        return {
            "server": mode,
            "N": n,
            "seconds": elapsed,
            "setup": setup,
            "rate": n / elapsed,
            "cpu_s": (cpu := server.cpu_seconds() - cpu0),
            "cpu_us": cpu / n * 1e6,
        }
    finally:
        for s in subs:
            s.stop()
        server.stop()


def joins_server(mode: str, workers: int) -> tuple[Any, tuple[str, ...], str]:
    """The server a mode runs, the hello's features, and the mode's label."""
    if peers.is_peer(mode):  # no presence: the same clients, hello (no features) and join
        return ServerProc(mode.removesuffix(PIPELINED)), (), mode
    options, features = JOIN_MODES[mode.removesuffix(PIPELINED)]
    if workers > 1:
        from bench.cluster import WorkersServer

        server = WorkersServer(workers, presence_events="--no-presence-events" not in options)
        return server, features, f"{mode}, {workers} workers"
    return ServerProc("rtcore", options=options), features, mode


def joins(
    args: argparse.Namespace,
    n: int,
    modes: list[str],
    member_frames_n: int,
    servers: list[str] | tuple[str, ...] = (),
) -> None:
    """Each of ``modes`` (rtcore's presence modes, or a peer's name), then each peer in
    ``servers`` that no mode names, at ``n`` clients (the member_* mode at its own N)."""
    named = {m.removesuffix(PIPELINED) for m in modes}
    modes = [*modes, *(s for s in servers if peers.is_peer(s) and s not in named)]
    rows = []
    for mode in modes:
        size = member_frames_n if mode == "member_*" else n
        procs = max(args.procs, math.ceil(size / 5000))
        rows.append(
            median_run(
                args.runs, run_joins, mode, size, procs, getattr(args, "workers", 1), key="seconds"
            )
        )
    print("\n## joins: N clients connect (upgrade + hello) and join one channel\n")
    print(
        table(
            rows,
            [
                ("server", "presence", ""),
                ("N", "clients", ",d"),
                ("seconds", "first connect to last join ok, s", ".2f"),
                ("rate", "joins/s", ",.0f"),
                ("cpu_s", "server CPU s", ".1f"),
                ("cpu_us", "server CPU µs/client", ",.0f"),
                *vs_node(rows),
            ],
            baseline="",
        )
    )
    runs_note(rows)


def vs_node(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """With node-ws in the run: each row's time as a multiple of Node's at the same N (the
    issue's targets are such ratios), else no column."""
    node = next((r for r in rows if r["server"] == peers.NODE_BASELINE), None)
    node = node or next((r for r in rows if r["server"].startswith(peers.NODE_BASELINE)), None)
    if node is None:
        return []
    for r in rows:
        same_n = r["N"] == node["N"]
        r["vs_node"] = f"{r['seconds'] / node['seconds']:.2f}x" if same_n else "— (other N)"
    return [("vs_node", f"time vs {node['server']}", "")]


def add_parser(sub: Subparsers) -> None:
    j = sub.add_parser("joins", help="N clients connect and join one channel; presence modes")
    j.add_argument("-n", "--clients", type=int, default=10_000)
    j.add_argument(
        "--modes",
        default="events off,diffs",
        help=f"of: {', '.join(JOIN_MODES)}, or a peer ({', '.join(peers.PEERS)}; also added "
        f"when --servers names it); each may end in '{PIPELINED}' (hello and join "
        "sent right behind the upgrade request)",
    )
    j.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: the server is `rtcore serve --workers N` over a private redis-server "
        "(SO_REUSEPORT; the kernel spreads the connections over the workers)",
    )
    j.add_argument(
        "--member-frames-n",
        type=int,
        default=2000,
        help="clients for the member_* mode (O(N^2) frames: 10,000 take minutes)",
    )


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    modes = peers.usable(args.modes.split(","), skip=False)
    joins(args, args.clients, modes, args.member_frames_n, servers)
