"""What metrics cost the broadcast path, in process: ``python -m bench.observe_cost --help``.

The socket benchmark (``python -m bench --servers rtcore,rtcore-metrics burst``) measures the
real thing but, on a shared machine, its noise can exceed the difference it looks for. This
one measures only the Python work metrics could add to: N members in one channel, M messages
sent per flush pass through ``App.send``, then one ``Flusher.flush`` writing to fake
connections that take every byte without a syscall. With no syscalls to dilute it, any
per-pass or per-delivery cost of the observer shows at its largest: an upper bound on the
relative slowdown. Servers with and without metrics take turns, ``--rounds`` times; the CPU
time (``time.process_time``) of each round is compared by median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import trio

import rtcore
from rtcore.core.members import Member
from rtcore.core.outbox import Outbox


class FakeConn:
    """Takes every byte at once, like an idle socket with room, without the syscall."""

    blocked = False
    closing = False
    counted = queued = 0

    def write_now(self, data: bytes | memoryview) -> int:
        return len(data)


def build(metrics: bool, members: int) -> rtcore.Server:
    config = rtcore.Config(api_port=None)  # metrics are off without the server API...
    # ...so the "off" server is built the same way by versions that predate metrics.
    server = rtcore.Server(config, metrics=True) if metrics else rtcore.Server(config)
    app = server.apps["default"]
    for i in range(members):
        member = Member(f"m{i}", None, None, Outbox(FakeConn()))
        app.connect(member)
        app.join(member, "bench", echo=True)
    server.flusher.flush()  # the joins' presence events
    return server


def one_round(server: rtcore.Server, passes: int, per_pass: int) -> float:
    app, flusher = server.apps["default"], server.flusher
    started = time.process_time()
    for _ in range(passes):
        for i in range(per_pass):
            app.send("bench", "tick", i, wall=1.0)
        flusher.poke()
        flusher.flush()
    return time.process_time() - started


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    kinds = ["off", "on"] if args.only is None else [args.only]
    servers = {kind: build(kind == "on", args.members) for kind in kinds}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind, server in servers.items():
            times[kind].append(one_round(server, args.passes, args.per_pass))
    if "on" in servers:
        assert getattr(servers["on"], "metrics", None) is not None
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observe_cost", description=__doc__)
    parser.add_argument("-n", "--members", type=int, default=1000)
    parser.add_argument("--per-pass", type=int, default=10, help="messages sent per flush pass")
    parser.add_argument("--passes", type=int, default=50, help="flush passes per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--only",
        choices=["off", "on"],
        help="measure one kind (e.g. 'off' against an older rtcore on PYTHONPATH)",
    )
    args = parser.parse_args(argv)
    times = trio.run(measure, args)
    deliveries = args.members * args.per_pass * args.passes
    print(
        f"{args.members} members, {args.per_pass} messages per pass, {args.passes} passes per "
        f"round, {args.rounds} rounds taking turns; CPU seconds per round (median):"
    )
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    for kind, median in medians.items():
        print(f"metrics {kind}: {median:.4f} s ({deliveries / median:,.0f} deliveries/s)")
    if len(medians) == 2:
        print(f"on / off: {medians['on'] / medians['off']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
