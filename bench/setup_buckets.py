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
    ("gc policy (collect and freeze each second, the valve)", ["GcFreezer"]),
    ("upgrade: rtcore.server.upgrade parses the request, builds the 101", ["Connection._upgrade"]),
    ("hello + join: session (decode, checks, app.connect, hub.join, replies)", ["Session.receive"]),
    ("hello + join: wsproto frame parsing", ["Connection._handle_events"]),
    ("reads (os.read, wait_readable)", ["Transport._take", "wait_readable", "Transport._receive"]),
    (
        "writes (101, welcome, ok)",
        ["Flusher.run", "Transport._write_through", "Transport._drain"],
    ),
    (
        "accept (trio listener and socket objects, admission, rtcore objects)",
        ["accept_forever", "Server._serve_clients.<locals>.accept", "Server._accepted"],
    ),
    (
        "task + nursery + cancel scopes",
        ["NurseryManager", "CancelScope", "Connection._serve", "start_soon"],
    ),
    ("handshake deadlines, heartbeat", ["HandshakeDeadlines", "Heartbeat"]),
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
