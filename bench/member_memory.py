"""Bytes per channel membership in the channel table (tracemalloc), and the cost of a
member page at any depth.

    python -m bench.member_memory [--members N] [--channels C]

N connected members each join C channels; the script reports the bytes the channel table
allocated per connection (connect) and per membership (join), excluding the members'
own objects, which exist whatever the table does. Then it times pages of 100 members near the
start and near the end of one N-member channel, with the table's cursor index and with a
rescan from the start (how pages were found before the index), and prints the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import time
import tracemalloc

from rtcore.core.members import ChannelTable, Member
from rtcore.core.outbox import Outbox, Pending


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


def rescan_page(table: ChannelTable, channel: str, after: int, limit: int) -> list[Member]:
    """The page as the table found it before its cursor index: skip from the start."""
    members = table.members(channel).values()
    later = itertools.dropwhile(lambda m: m.channels[channel] <= after, members)
    return list(itertools.islice(later, limit))


def page_costs(members: int, repeat: int = 200) -> dict[str, float]:
    """Seconds per page of 100 at depth 0 and at the end, indexed and rescanning."""
    table = ChannelTable(Pending())
    conns = [Member(f"conn-{i:09d}", None, None, Outbox()) for i in range(members)]
    for m in conns:
        table.connect(m)
        table.join(m, "room")
    costs = {}
    for depth in (0, members - 200):
        after = conns[depth].channels["room"]
        assert table.page("room", after, 100)[0] == rescan_page(table, "room", after, 100)
        for name in ("index", "rescan"):
            start = time.perf_counter()
            for _ in range(repeat):
                if name == "index":
                    table.page("room", after, 100)
                else:
                    rescan_page(table, "room", after, 100)
            costs[f"{name}@{depth}"] = (time.perf_counter() - start) / repeat
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    per_conn, per_join = measure(args.members, args.channels)
    print("| members | channels | bytes/connection (connect) | bytes/membership (join) |")
    print("|---|---|---|---|")
    print(f"| {args.members} | {args.channels} | {per_conn:.0f} | {per_join:.0f} |")
    costs = page_costs(args.members)
    deep = args.members - 200
    print()
    print("| page of 100 | at depth 0 | at depth", deep, "| deep / shallow |")
    print("|---|---|---|---|")
    for name in ("index", "rescan"):
        shallow, far = costs[f"{name}@0"], costs[f"{name}@{deep}"]
        print(f"| {name} | {shallow * 1e6:.0f} µs | {far * 1e6:.0f} µs | {far / shallow:.1f} |")


if __name__ == "__main__":
    main()
