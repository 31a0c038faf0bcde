"""joins: N clients connect and join one channel, with each presence mode."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

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
    last join's ok, with presence events off, as batched diffs, or one member_* per join.
    ``workers`` > 1: ``rtcore serve --workers`` over a private Redis instead (bench.cluster)."""
    pipeline = mode.endswith(PIPELINED)
    options, features = JOIN_MODES[mode.removesuffix(PIPELINED)]
    server: Any
    if workers > 1:
        from bench.cluster import WorkersServer

        server = WorkersServer(workers, presence_events="--no-presence-events" not in options)
        mode = f"{mode}, {workers} workers"
    else:
        server = ServerProc("rtcore", options=options)
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
            "cpu_s": server.cpu_seconds() - cpu0,
        }
    finally:
        for s in subs:
            s.stop()
        server.stop()


def joins(args: argparse.Namespace, n: int, modes: list[str], member_frames_n: int) -> None:
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
            ],
            baseline="",
        )
    )
    runs_note(rows)


def add_parser(sub: Subparsers) -> None:
    j = sub.add_parser("joins", help="N clients connect and join one channel; presence modes")
    j.add_argument("-n", "--clients", type=int, default=10_000)
    j.add_argument(
        "--modes",
        default="events off,diffs",
        help=f"of: {', '.join(JOIN_MODES)}; each may end in '{PIPELINED}' (hello and join "
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
    joins(args, args.clients, args.modes.split(","), args.member_frames_n)
