"""rooms: many small rooms (chat), with and without presence churn, next to a burst.

N members in rooms of S (``lt.room.<r>``); in each room P members are senders (echo off)
sending to their room at R/P messages a second each, so the room gets R messages/s and each
of its other S−1 members receives every one. The load side is ``rtcore loadtest``'s: its C
agent (``csrc/cagent.c``) runs the chat members and senders; with churn, its Python agent runs
C churner connections, one per room in turn, each joining its room, updating its profile and
leaving, C join/update/leave cycles a second in all. The same invocation runs the
1,000-subscriber burst (``bench.scenarios.burst``), so the server CPU per delivery of the rooms
reads against the burst's.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.cluster import write_calls
from bench.harness import TICK, ServerProc
from bench.scenarios import Subparsers, burst
from bench.tables import interleaved_runs, progress, report
from rtcore.loadtest import cagent
from rtcore.loadtest import plan as p
from rtcore.loadtest.progress import Progress
from rtcore.loadtest.runner import Run, aggregate

FRAME_OVERHEAD = 98
"""Bytes of a delivered chat message frame without its padding (header, ids, ``t0``)."""
SHAPES = ("burst", "rooms", "rooms+churn", "rooms-raw", "rooms-c")
CHURN_OPS = 3
"""A churn cycle's operations: join, profile update, leave."""


class MeasuredRun(Run):
    """A loadtest run that notes the server's CPU seconds and the time when the senders were
    told to go and when the last delivery owed arrived (before the runner's linger)."""

    def __init__(
        self, plan: p.Plan, server: ServerProc, also: Callable[[], float] = lambda: 0.0
    ) -> None:
        super().__init__(plan, Progress(quiet=True))
        self.server = server
        self.also = also
        """A count noted with them (the churn's operations acked so far)."""
        self.span: dict[str, float] = {}

    def _tell(self, command: str) -> None:
        if command == "go":
            self.span.update(t0=time.monotonic(), **self._now("0"))
        super()._tell(command)

    def _linger(self) -> None:
        self.span.update(t1=time.monotonic(), **self._now("1"))
        super()._linger()

    def _now(self, suffix: str) -> dict[str, float]:
        return {
            f"cpu{suffix}": self.server.cpu_seconds(),
            f"sys{suffix}": system_seconds(self.server.proc.pid),
            f"writes{suffix}": write_calls(self.server.proc.pid),
            f"also{suffix}": self.also(),
        }


def system_seconds(pid: int) -> float:
    """The kernel's share of a process's CPU seconds so far (``/proc/<pid>/stat`` stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / TICK


def chat_plan(
    port: int,
    n: int,
    room_size: int,
    senders: int,
    rate: float,
    seconds: float,
    size: int,
    workers: int = 1,
) -> p.Plan:
    """Members in rooms of ``room_size``; the first ``senders`` of each room send ``rate``
    messages/s to it, shared among them, for ``seconds``."""
    per_sender = rate / senders
    conns = tuple(
        p.Conn(
            i,
            0,
            "sender" if i % room_size < senders else "member",
            (f"lt.room.{i // room_size}",),
        )
        for i in range(n)
    )
    return p.Plan(
        scenario="chat",
        targets=(p.Target("127.0.0.1", port),),
        conns=conns,
        hello={"echo": False},
        connect_rate=5000.0,
        rate=per_sender,
        messages=max(1, round(per_sender * seconds)),
        size=max(0, size - FRAME_OVERHEAD),
        duration=seconds + 90.0,
        workers=workers,
        agent=cagent.choose("auto", "chat"),  # C, unless there is no compiler
    )


def churn_plan(port: int, rooms: int, churners: int, cycles: float, seconds: float) -> p.Plan:
    """``churners`` connections, one per room in turn, ``cycles`` join/update/leave cycles
    a second in all, for at most ``seconds`` (the rooms run stops them sooner)."""
    conns = tuple(p.Conn(k, 0, "churner", (f"lt.room.{k % rooms}",)) for k in range(churners))
    rate = CHURN_OPS * cycles / churners
    return p.Plan(
        scenario="churn",
        targets=(p.Target("127.0.0.1", port),),
        conns=conns,
        hello={"echo": False},
        connect_rate=1000.0,
        rate=rate,
        messages=math.ceil(rate * seconds),
        duration=seconds,
        agent="python",
    )


class Churn:
    """The churn run in a thread, stopped when the measured run is done."""

    def __init__(self, plan: p.Plan, server: ServerProc) -> None:
        self.run = MeasuredRun(plan, server)
        self.result: dict[str, Any] = {}
        self.failure: Exception | None = None
        self.thread = threading.Thread(target=self._execute, daemon=True)

    def _execute(self) -> None:
        try:
            self.result = self.run.execute()
        except Exception as exc:  # a load process failed: said by stop()
            self.failure = exc

    def start(self, timeout: float = 30.0) -> None:
        """Start it; return once its churners are sending."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while "t0" not in self.run.span:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the churners did not start")
            time.sleep(0.05)

    def acked(self) -> float:
        """The churn operations acked so far."""
        latest = list(self.run.latest.values())
        return float(aggregate(latest)["counts"].get("acked", 0)) if latest else 0.0

    def stop(self) -> dict[str, Any]:
        self.run.deadline = time.monotonic()  # ends its sending phase; the agents stop
        self.thread.join(30.0)
        if self.failure is not None or not self.result:
            raise RuntimeError(f"the churn run failed: {self.failure or 'no result'}")
        return self.result


def run_rooms(args: argparse.Namespace, churn: bool, kind: str = "rtcore") -> dict[str, Any]:
    server = ServerProc(kind)
    rooms = math.ceil(args.members / args.room_size)
    port = server.address[1]
    churner: Churn | None = None
    try:
        if churn:
            plan = churn_plan(port, rooms, args.churners, args.churn, args.seconds + 120.0)
            churner = Churn(plan, server)
            churner.start()
        chat = chat_plan(
            port,
            args.members,
            args.room_size,
            args.senders,
            args.rate,
            args.seconds,
            args.size,
            args.procs,
        )
        run = MeasuredRun(chat, server, churner.acked if churner else lambda: 0.0)
        result = run.execute()
        churned = churner.stop() if churner else None
    finally:
        if churner is not None:  # (stopped already, unless the chat run failed)
            churner.run.deadline = time.monotonic()
        server.stop()
    row = rooms_row(args, churn, run.span, result, churned)
    if kind != "rtcore":  # its writes are socket sends, which syscw does not count
        row.update(shape=f"{kind} server: {row['shape']}", per_write=math.nan)
    return {"server": kind, **row}


def rooms_row(
    args: argparse.Namespace,
    churn: bool,
    span: dict[str, float],
    result: dict[str, Any],
    churned: dict[str, Any] | None,
) -> dict[str, Any]:
    seconds = span["t1"] - span["t0"]
    cpu = span["cpu1"] - span["cpu0"]
    got = result["deliveries"]["received"]
    lat = result["latency"]
    ops = span["also1"] - span["also0"]
    refused = result["messages"]["refused"] + (churned["messages"]["refused"] if churned else 0)
    return {
        "shape": f"{args.members} in rooms of {args.room_size}" + (", churn" if churn else ""),
        "deliveries": got,
        "expected": result["deliveries"]["expected"],
        "messages": result["messages"]["acked"],
        "seconds": seconds,
        "rate": got / seconds,
        "p50": lat["p50"],
        "p99": lat["p99"],
        "max": lat["max"],
        "cpu": cpu / seconds,
        "cpu_seconds": cpu,
        "us_per_delivery": cpu / max(1, got) * 1e6,
        "kernel": (span["sys1"] - span["sys0"]) / cpu if cpu > 0 else math.nan,
        "load_cpu": result["load_cpu"] / result["phases"]["run"],
        "us_per_message": cpu / max(1, result["messages"]["acked"]) * 1e6,
        "per_write": got / max(1, span["writes1"] - span["writes0"]),
        "churn_cycles": ops / CHURN_OPS / seconds,
        "refused": refused,
    }


def run_burst_row(args: argparse.Namespace) -> dict[str, Any]:
    row = burst.run_burst("rtcore", args.burst_n, args.burst_m, args.size, args.procs)
    return {
        "per_write": math.nan,
        "kernel": math.nan,
        "load_cpu": math.nan,
        **row,
        "shape": f"burst: {args.burst_n} in one channel",
        "messages": args.burst_m,
        "p50": math.nan,
        "p99": math.nan,
        "max": math.nan,
        "us_per_delivery": row["cpu_seconds"] / max(1, row["deliveries"]) * 1e6,
        "us_per_message": row["cpu_seconds"] / args.burst_m * 1e6,
        "churn_cycles": 0.0,
        "refused": 0,
    }


COLUMNS = [
    ("shape", "shape", ""),
    ("deliveries", "deliveries", ",d"),
    ("rate", "deliveries/s", ",.0f"),
    ("p50", "p50 ms", ".2f"),
    ("p99", "p99 ms", ".2f"),
    ("max", "max ms", ".1f"),
    ("cpu", "server CPU", ".0%"),
    ("kernel", "of it kernel", ".0%"),
    ("load_cpu", "load CPU (whole run)", ".0%"),
    ("us_per_message", "CPU µs/message", ".1f"),
    ("us_per_delivery_median", "CPU µs/delivery", ".3f"),
    ("vs_burst", "µs/delivery vs burst", ""),
    ("per_write", "deliveries/write", ".1f"),
    ("churn_cycles", "churn cycles/s", ".1f"),
    ("refused", "refused", "d"),
]
"""The table's columns: (row key, header, format)."""


def rooms(args: argparse.Namespace) -> None:
    shapes = args.shapes.split(",")
    run = {
        "burst": lambda: run_burst_row(args),
        "rooms": lambda: run_rooms(args, churn=False),
        "rooms+churn": lambda: run_rooms(args, churn=True),
        "rooms-raw": lambda: run_rooms(args, churn=False, kind="raw"),
        "rooms-c": lambda: run_rooms(args, churn=False, kind="c-ceiling"),
    }
    rows = interleaved_runs(
        args.runs,
        shapes,
        lambda shape: run[shape](),
        key="us_per_delivery",
        scenario="rooms",
        medians=("us_per_delivery",),
    )
    base = rows[0]["us_per_delivery_median"] if shapes[0] == "burst" else math.nan
    for row in rows:
        row["vs_burst"] = f"{row['us_per_delivery_median'] / base:.2f}x" if base > 0 else "—"
    senders = args.senders
    report(
        f"\n## rooms: {args.members} members in rooms of {args.room_size}, {senders} senders "
        f"a room, {args.rate:g} msgs/s a room for {args.seconds:g} s (offered "
        f"{offered(args):,.0f} deliveries/s), churn {args.churn:g} join/update/leave cycles/s "
        f"over {args.churners} connections, ~{args.size}-byte messages\n",
        rows,
        COLUMNS,
    )
    for row in rows[1:] if base > 0 else []:  # (nan > 0 is False: no burst row)
        progress(f"{row['shape']}: {row['us_per_delivery_median'] / base:.2f}x burst's CPU")


def offered(args: argparse.Namespace) -> float:
    rooms = math.ceil(args.members / args.room_size)
    return rooms * args.rate * (args.room_size - 1)


def add_parser(sub: Subparsers) -> None:
    r = sub.add_parser("rooms", help="many small rooms (chat), with and without churn")
    r.add_argument("-n", "--members", type=int, default=1000)
    r.add_argument("--room-size", type=int, default=50)
    r.add_argument("--senders", type=int, default=5, help="senders a room (members too)")
    r.add_argument("--rate", type=float, default=100.0, help="messages/s a room")
    r.add_argument("--seconds", type=float, default=20.0)
    r.add_argument("--size", type=int, default=110, help="delivered frame size, bytes")
    r.add_argument(
        "--shapes",
        default="burst,rooms,rooms+churn",
        help="rows, comma-separated: burst (the 1,000-subscriber burst, first: the ratios' "
        "base), rooms (no churn), rooms+churn, rooms-raw (the raw server: one write a "
        "delivery and no per-request work, the floor of this shape's CPU per delivery in "
        "Python), rooms-c (the C ceiling, bench/peers/cserver.c: the machine's floor)",
    )
    r.add_argument("--churn", type=float, default=50.0, help="join/update/leave cycles/s")
    r.add_argument("--churners", type=int, default=50, help="churning connections")
    r.add_argument("--burst-n", type=int, default=1000, help="the burst row's subscribers")
    r.add_argument("--burst-m", type=int, default=2000, help="the burst row's messages")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    if args.senders < 1 or args.senders > args.room_size or args.room_size < 2:
        parser.error("rooms: --room-size at least 2, --senders 1 to --room-size")
    if not args.shapes or not set(args.shapes.split(",")) <= set(SHAPES):
        parser.error(f"rooms: --shapes of {', '.join(SHAPES)}")
    if "rooms+churn" in args.shapes.split(",") and args.churn <= 0:
        parser.error("rooms: --churn above 0 for the rooms+churn row")
    rooms(args)
