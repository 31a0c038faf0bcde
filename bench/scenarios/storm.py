"""storm: N clients; the server is killed and restarted; time until all have rejoined."""

from __future__ import annotations

import argparse
from typing import Any

from bench.harness import ServerProc, build_csub
from bench.scenarios import Subparsers
from bench.tables import median_run, runs_note, table
from rtcore.loadtest.native import CStorm


def run_storm(n: int, ips: int) -> dict[str, Any]:
    """N clients (hello with presence diffs, join one channel) from ``ips`` loopback
    addresses, under the default per-IP limits; the server is killed and started again on
    the same port; time until every client is back and rejoined, refusals by kind."""
    options = ("--per-ip-limits",)
    server = ServerProc("rtcore", options=options)
    clients = CStorm(server.address, n, ips)
    try:
        setup = float(clients.line()[1])
        clients.storm()
        server.stop()  # a crash: SIGKILL, every connection reset
        server = ServerProc("rtcore", options=(*options, "--port", str(server.address[1])))
        seconds, refusals = clients.recovered()
        return {
            "server": "rtcore",
            "N": n,
            "ips": ips,
            "setup": setup,
            "seconds": seconds,
            "rate": n / seconds,
            "refusals": ", ".join(f"{k}: {v:,}" for k, v in sorted(refusals.items())) or "none",
        }
    finally:
        clients.stop()
        server.stop()


def storm(args: argparse.Namespace, n: int, ips: int) -> None:
    if not build_csub("cstorm"):
        raise SystemExit("the storm scenario needs a C compiler (rtcore/loadtest/csrc/cstorm.c)")
    row = median_run(args.runs, run_storm, n, ips, key="seconds")
    print(f"\n## storm: {n:,} clients from {ips} IPs, the server killed and restarted\n")
    print(
        table(
            [row],
            [
                ("N", "clients", ",d"),
                ("setup", "first setup, s", ".2f"),
                ("seconds", "restart to all rejoined, s", ".2f"),
                ("refusals", "refusals by close code / HTTP status / tcp", ""),
            ],
            baseline="",
        )
    )
    runs_note([row])


def add_parser(sub: Subparsers) -> None:
    st = sub.add_parser("storm", help="N clients; the server restarts; all reconnect and rejoin")
    st.add_argument("-n", "--clients", type=int, default=10_000)
    st.add_argument("--ips", type=int, default=40, help="loopback source addresses")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    storm(args, args.clients, args.ips)
