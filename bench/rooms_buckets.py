"""Where a small-room message goes: py-spy's raw stacks of the ``rooms`` scenario's server
(``bench/profile_setup.sh OUT rooms --shapes rooms``) summed into the steps of a chat
message (read, decode, checks, fan-out, framing, ack, flush, writes), as shares and as
microseconds per message and per delivery.

    python bench/rooms_buckets.py OUT.raw CPU_US_PER_MESSAGE [DELIVERIES_PER_MESSAGE]

``CPU_US_PER_MESSAGE`` is the run's "CPU µs/message" column; deliveries per message default
to 49 (rooms of 50, echo off). Each sample counts once, in the first bucket (in the order
below) whose marker is on its stack; the server's start-up (imports) is left out.
"""

from __future__ import annotations

import collections
import sys

STARTUP = "startup (imports)"
BUCKETS: list[tuple[str, list[str]]] = [
    (STARTUP, ["_find_and_load", "_compile_and_eval", "_optimize_charset"]),
    ("write syscalls (Transport.write_now)", ["Transport.write_now"]),
    ("read syscalls (Transport._read_now)", ["Transport._read_now"]),
    ("pings (heartbeat)", ["heartbeat.py"]),
    ("presence frames", ["presence.py", "App.join", "App.leave", "App.update_profile"]),
    ("ack: encode, frame, queue (Session._reply)", ["Session._reply"]),
    ("msg: encode + WebSocket framing, once (app.framed)", ["framed (rtcore/core/app.py:"]),
    ("fan-out: queue to the room's outboxes (App._publish)", ["App._publish"]),
    ("value check (values.check)", ["check (rtcore/protocol/values.py:"]),
    (
        "permission + rate checks",
        ["access.py", "Session._charge", "limiter", "Session._presence_bucket"],
    ),
    ("request decode: msgpack + frame fields (codec)", ["decode_client_frame"]),
    ("request decode: WebSocket frames + unmasking (wsproto)", ["wsproto/"]),
    ("flusher passes, per outbox (minus writes)", ["Flusher."]),
    ("send handler, the rest (ids, Msg, stats)", ["Session.receive"]),
    ("trio + the connection loop: scheduling, epoll, wake-ups", ["trio/"]),
]


def buckets(path: str) -> tuple[collections.Counter[str], int]:
    """Samples per bucket ("other": none matched), and the samples outside start-up."""
    counts: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            name = next((b for b, keys in BUCKETS if any(k in stack for k in keys)), "other")
            counts[name] += int(n)
    return counts, sum(counts.values()) - counts[STARTUP]


def main() -> None:
    path, us_message = sys.argv[1], float(sys.argv[2])
    per = float(sys.argv[3]) if len(sys.argv) > 3 else 49.0
    counts, steady = buckets(path)
    print(f"{steady} samples (start-up's {counts[STARTUP]} left out)\n")
    print("| where | share | µs per message | µs per delivery |\n|---|---|---|---|")
    for name in [b for b, _ in BUCKETS[1:]] + ["other"]:
        share = counts[name] / max(1, steady)
        us = share * us_message
        print(f"| {name} | {share:.1%} | {us:.1f} | {us / per:.3f} |")


if __name__ == "__main__":
    main()
