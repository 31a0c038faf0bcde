"""Bytes per channel membership in the channel table, measured with tracemalloc.

    python -m bench.member_memory [--members N] [--channels C]

N connected members each join C channels; the script reports the bytes the channel table
allocated per connection (connect) and per membership (join), excluding the members'
own objects, which exist whatever the table does. Deterministic: no clock, no randomness.
"""

from __future__ import annotations

import argparse
import tracemalloc

from rtcore.hub import ChannelTable, Member
from rtcore.outbox import Outbox, Pending


def measure(members: int, channels: int) -> tuple[float, float]:
    table = ChannelTable(Pending())
    conns = [
        Member(f"conn-{i:09d}", f"user-{i % 97}" if i % 2 else None, None, Outbox())
        for i in range(members)
    ]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for m in conns:
        table.connect(m)
    connected = tracemalloc.get_traced_memory()[0]
    for ch in range(channels):
        for m in conns:
            table.join(m, f"room-{ch}")
    joined = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (connected - base) / members, (joined - connected) / (members * channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    per_conn, per_join = measure(args.members, args.channels)
    print("| members | channels | bytes/connection (connect) | bytes/membership (join) |")
    print("|---|---|---|---|")
    print(f"| {args.members} | {args.channels} | {per_conn:.0f} | {per_join:.0f} |")


if __name__ == "__main__":
    main()
