"""The long chaos run of issue 24: two rtcore nodes (each ``rtcore serve`` in its own
process) over one Redis, behind a load balancer, with history subscribers and publishers on
the project's Python client and presence clients, while faults come in turn -- Redis stalled
(SIGSTOP), Redis killed and restarted, a node killed, a node drained -- for ``--minutes``,
with Redis without persistence or with AOF (``--aof``).

    python -m bench.scenarios.chaos_soak --minutes 8 [--aof]

It prints the figures the issue's "Done when" names: deliveries of refused sends, messages
missed without a signal to the subscriber, clients stuck, losses after ``recovered: true``,
whether the member lists were exact on both nodes, and the nodes' memory. The harness is
tests/integration/chaos_nodes.py (whose short run is tests/integration/test_chaos_nodes.py).
Exit status 1 if any figure that must be 0 is not.
"""

from __future__ import annotations

import argparse
import sys

import trio

from bench.tables import machine
from tests.integration.chaos_nodes import Load, run_chaos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.chaos_soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="length of the fault phase")
    parser.add_argument("--aof", action="store_true", help="Redis with AOF (fsync every second)")
    parser.add_argument("--period", type=float, default=70.0, help="seconds between faults")
    parser.add_argument("--stall", type=float, default=5.0, help="seconds Redis stays stopped")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=6)
    parser.add_argument("--presence", type=int, default=20, help="presence clients")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load = Load(
        duration=args.minutes * 60,
        period=args.period,
        stall=args.stall,
        subscribers=args.subscribers,
        publishers=args.publishers,
        watchers=args.presence,
        aof=args.aof,
    )
    report = trio.run(run_chaos, load)
    print(f"machine: {machine()}")
    print("\n".join(report.lines()))
    return 0 if report.clean() else 1


if __name__ == "__main__":
    sys.exit(main())
