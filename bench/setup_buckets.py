"""Where a connection's setup goes: py-spy's raw stacks (bench/profile_setup.sh) summed into
the steps of accept → upgrade → hello → join, as shares and as microseconds per connection.

    python bench/setup_buckets.py OUT.raw [CPU_US_PER_CONNECTION]

Each sample counts once, in the first bucket (in the order below) whose marker is on its
stack; the server's start-up (imports) is left out of the shares.
"""

from __future__ import annotations

import collections
import sys

BUCKETS: list[tuple[str, list[str]]] = [
    (
        "startup (imports, config)",
        ["importlib", "<module> (rtcore", "__getattr__ (rtcore/__init__"],
    ),
    ("upgrade: h11/wsproto parse the request", ["H11Handshake.receive_data"]),
    ("upgrade: wsproto/h11 build the 101", ["WSConnection.send (wsproto/__init__.py"]),
    ("reads (os.read, wait_readable)", ["Connection._receive"]),
    ("upgrade: rtcore's own (headers, origin, drop handshake)", ["Connection._upgrade"]),
    ("hello + join: session (decode, checks, app.connect, hub.join, replies)", ["Session.receive"]),
    ("hello + join: wsproto frame parsing", ["Connection._handle_events"]),
    ("flusher writes (101, welcome, ok)", ["Flusher.run"]),
    ("accept (trio listener and socket objects, admission, rtcore objects)", ["accept_forever"]),
    (
        "task + nursery + handshake timeout scope",
        ["NurseryManager", "CancelScope.__enter__", "CancelScope.__exit__", "Connection._serve"],
    ),
    ("close/cleanup", ["Connection._cleanup", "Connection._finish"]),
    ("connection task, other", ["Connection.run"]),
    ("trio scheduler, epoll (not attributed)", [""]),
]


def main() -> None:
    totals: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(sys.argv[1]) as raw:
        for line in raw:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            samples += n
            for name, markers in BUCKETS:
                if any(m in stack for m in markers):
                    totals[name] += n
                    break
    per_conn = float(sys.argv[2]) if len(sys.argv) > 2 else None
    startup = totals[BUCKETS[0][0]]
    print(f"{samples} samples, {startup} in start-up (left out)\n")
    print("| step | share | µs per connection |\n|---|---|---|")
    for name, _ in BUCKETS[1:]:
        share = totals[name] / (samples - startup)
        us = f"{share * per_conn:.0f}" if per_conn else ""
        print(f"| {name} | {100 * share:.1f}% | {us} |")


if __name__ == "__main__":
    main()
