"""A stand-in for an rtcore worker in the supervisor's tests: it speaks the link protocol
(rtcore.workers.link) and appends what happens to it to a file, one ``<pid> <event>`` line each.

    python fake_worker.py FD EVENTS [--ready-after S] [--ignore-term] [--exit-after S CODE]

Like rtcore's worker, it sets its signal handlers only when it is about to report itself
ready: a SIGHUP before that kills it (the default action).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from types import FrameType


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fd", type=int)
    parser.add_argument("events")
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--exit-after", type=float, nargs=1)
    parser.add_argument("--exit-code", type=int, default=3)
    args = parser.parse_args()
    events = open(args.events, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    def record(what: str) -> None:
        events.write(f"{os.getpid()} {what}\n")

    def on_stop(signum: int, frame: FrameType | None) -> None:
        record(f"stop {signum}")
        sys.exit(0)

    def on_term_ignored(signum: int, frame: FrameType | None) -> None:
        record("term-ignored")

    link = socket.socket(fileno=args.fd)
    record("start")
    time.sleep(args.ready_after)
    signal.signal(signal.SIGHUP, lambda signum, frame: record("hup"))
    signal.signal(signal.SIGTERM, on_term_ignored if args.ignore_term else on_stop)
    signal.signal(signal.SIGINT, on_stop)
    record("ready")  # before telling: the supervisor may signal at once
    link.sendall(b"ready fake\n")
    if args.exit_after is not None:
        time.sleep(args.exit_after[0])
        record(f"exit {args.exit_code}")
        sys.exit(args.exit_code)
    while link.recv(64):
        pass
    record("orphaned")


if __name__ == "__main__":
    main()
