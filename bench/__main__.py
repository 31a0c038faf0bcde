"""rtcore benchmark harness: ``python -m bench SCENARIO --help`` (burst, steady, connect, churn,
joins, storm, nodes-burst, nodes-steady, bystander, rooms, all, smoke).

Every scenario starts each server under test in its own process (``bench.servers``), drives it
from separate load processes (``rtcore.loadtest``'s load clients, the ones ``rtcore loadtest``
uses), and prints a markdown table with the ratio to the naive trio-websocket baseline measured
in the same invocation. The ``raw`` server shows the load generator's own ceiling on this
machine. The ``nodes-*`` scenarios run rtcore nodes (``rtcore serve``) over a private
``redis-server`` (``bench.cluster``) and compare them with one node in the same invocation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import cluster, harness, peers
from bench.scenarios import (
    Subparsers,
    burst,
    bystander,
    churn,
    connect,
    joins,
    nodes,
    rooms,
    steady,
    storm,
)
from bench.tables import machine

Command = Callable[[argparse.ArgumentParser, argparse.Namespace, list[str]], None]

PARSERS: tuple[Callable[[Subparsers], None], ...] = (
    burst.add_parser,
    steady.add_parser,
    connect.add_parser,
    churn.add_parser,
    joins.add_parser,
    storm.add_parser,
    nodes.add_parser,  # nodes-burst and nodes-steady
    bystander.add_parser,
    rooms.add_parser,
)
"""Each scenario's subcommands, in the order ``--help`` lists them."""
COMMANDS: dict[str, Command] = {
    "burst": burst.command,
    "steady": steady.command,
    "connect": connect.command,
    "churn": churn.command,
    "joins": joins.command,
    "storm": storm.command,
    "nodes-burst": nodes.command,
    "nodes-steady": nodes.command,
    "bystander": bystander.command,
    "rooms": rooms.command,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        default="rtcore,naive,raw",
        help="servers to run, comma-separated (rtcore, rtcore-metrics, rtcore-history, "
        "rtcore-nofreeze, naive, raw, node-ws, c-ceiling); rtcore-metrics is rtcore with its "
        "Prometheus metrics on, rtcore-history with channel history on every channel "
        "(history_size 1000), rtcore-nofreeze without the garbage collector's freezing "
        "(rtcore.server.gc_policy); node-ws and c-ceiling are the peers (bench/peers/: Node's "
        "ws, and a C epoll server, the machine's limit), for burst, steady, connect and joins",
    )
    parser.add_argument("--procs", type=int, default=1, help="subscriber load processes")
    parser.add_argument("--runs", type=int, default=1, help="runs per server; the median is shown")
    parser.add_argument(
        "--flush-window", type=float, default=0.002, help="rtcore's flush batching window, seconds"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=600.0,
        help="rtcore's heartbeat interval, seconds (default 600: past any run; the C load "
        "client answers pings, so e.g. 25, rtcore's default, gives the pings a real server sends)",
    )
    parser.add_argument(
        "--load",
        choices=["c", "python"],
        default="c",
        help="subscriber load generator: C (rtcore/loadtest/csrc/csub.c, built with cc) or Python",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    for add_parser in PARSERS:
        add_parser(sub)
    sub.add_parser("all", help="every scenario with its defaults")
    sub.add_parser("smoke", help="every scenario at tiny N (the test suite runs this)")
    return parser


def configure(args: argparse.Namespace) -> None:
    """The options every scenario's processes take (the harness's module-level settings)."""
    harness.LOAD["c"] = args.load == "c" and harness.build_csub()
    harness.SERVER_ARGS[:] = ["--flush-window", str(args.flush_window)]
    harness.SERVER_ARGS += ["--heartbeat", str(args.heartbeat)]
    nodes.PROCS["n"] = args.procs


def every_scenario(args: argparse.Namespace, servers: list[str], tiny: bool) -> None:
    """``all`` (each scenario at its default size) or ``smoke`` (``tiny``: each at a size
    that only checks the harness runs)."""
    if tiny:
        print("smoke: tiny sizes that check the harness runs; NOT MEANINGFUL as numbers\n")
    c_load = harness.LOAD["c"]
    burst.burst(servers, args, 20 if tiny else 1000, 50 if tiny else 2000, 110, 20 if tiny else 200)
    steady.steady(
        servers, args, 20 if tiny else 1000, 50.0 if tiny else 200.0, 1.0 if tiny else 10.0, 110
    )
    without_raw = [s for s in servers if s != "raw"]
    connect.connect(without_raw, args, [250] if tiny else [1000, 5000, 10000])
    presence = [s for s in without_raw if not peers.is_peer(s)]  # churn measures presence
    churn.churn(presence, args, 20 if tiny else 1000, 20 if tiny else 1000, 10 if tiny else 100)
    modes = ["events off", *(["diffs", "member_*"] if c_load else [])]
    joins.joins(args, 100 if tiny else 10_000, modes, 100 if tiny else 2000, servers)
    if c_load:
        storm.storm(args, 50 if tiny else 10_000, 5 if tiny else 40)
    if cluster.redis_binary() is None:
        print("\nnodes-burst, nodes-steady: SKIPPED (no redis-server on PATH)")
    elif not tiny or c_load:  # its load side is burst's and steady's: smoked with C only
        two = ["memory", "redis-2"]
        nodes.nodes_burst(args, two, 20 if tiny else 1000, 50 if tiny else 2000, 110)
        nodes.nodes_steady(  # the memory layout's steady run is the steady scenario's
            args,
            two[1:] if tiny else two,
            10 if tiny else 50,
            50 if tiny else 2000.0,
            0.5 if tiny else 10.0,
            110,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    servers = peers.usable(args.servers.split(","), skip=args.scenario in ("all", "smoke"))
    configure(args)
    print(
        f"machine: {machine()}; load: {'C' if harness.LOAD['c'] else 'Python'} subscribers, "
        f"{args.procs} process(es)\n"
    )
    if args.scenario in ("all", "smoke"):
        every_scenario(args, servers, tiny=args.scenario == "smoke")
    else:
        COMMANDS[args.scenario](parser, args, servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
