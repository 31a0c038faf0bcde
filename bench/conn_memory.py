"""Where the bytes of an idle connection go: tracemalloc by allocation site and a census of object
types, per connection, at N idle connections after hello and join.

python -m bench.conn_memory [-n 10000]

Runs an rtcore server in this process with tracemalloc on, opens N connections with the C load
client (rtcore/loadtest/csrc/csub.c: upgrade, hello, join into one channel, presence events off
so the channel's presence is not in the count), waits until they are idle, and prints what the
server allocated for them, per connection: the top allocation sites, and the object types that
grew (their ``sys.getsizeof``, which leaves out what they share). The process's RSS growth per
connection is printed too; it includes what tracemalloc does not see (kernel-side socket memory
is not in RSS at all) and allocator slack.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tracemalloc
from collections import Counter

import attrs
import trio

import rtcore
from bench.harness import build_csub
from rtcore.config import AppConfig, ChannelRule
from rtcore.loadtest import native, wire


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def census() -> Counter[str]:
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        sizes[type(obj).__qualname__] += sys.getsizeof(obj)
    return sizes


def idle_config() -> rtcore.Config:
    """rtcore's defaults, but for pings past the run and per-IP caps lifted (all the load
    comes from 127.0.0.1), with presence events off."""
    limits = attrs.evolve(
        rtcore.Limits(),
        heartbeat_interval=600.0,
        max_connections_per_ip=1_000_000,
        connect_rate_per_ip=1e9,
        connect_burst_per_ip=1_000_000,
    )
    app = AppConfig("default", channels=(ChannelRule("*", presence_events=False),))
    return rtcore.Config(host="127.0.0.1", port=0, limits=limits, api_port=None, apps=(app,))


async def measure(n: int, top: int) -> None:
    server = rtcore.Server(idle_config())
    async with trio.open_nursery() as nursery:
        (host, port), *_ = await nursery.start(server.serve)
        gc.collect()
        types0, rss0 = census(), rss()
        before = tracemalloc.take_snapshot()
        first = wire.request(t="hello", v=1, echo=False) + wire.request(t="join", id=1, ch="c")
        csub = subprocess.Popen(  # noqa: ASYNC220 (spawning returns at once; reads are in threads)
            [str(native.binary_path("csub")), host, str(port), str(n), first.hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert csub.stdout is not None and csub.stdin is not None
        line = await trio.to_thread.run_sync(csub.stdout.readline)
        if not line.startswith("ready"):
            raise SystemExit(f"load client failed: {line}")
        await trio.sleep(1.0)  # idle: every reply written, every buffer drained
        gc.collect()
        after = tracemalloc.take_snapshot()
        types1, rss1 = census(), rss()
        total = sum(s.size_diff for s in after.compare_to(before, "filename"))
        print(f"{n:,} idle connections (hello + join, presence events off)\n")
        print(f"tracemalloc: {total / n:,.0f} bytes per connection")
        print(f"RSS growth:  {(rss1 - rss0) / n:,.0f} bytes per connection\n")
        print("| allocation site | bytes/conn |\n|---|---|")
        for stat in after.compare_to(before, "lineno")[:top]:
            frame = stat.traceback[0]
            where = f"{frame.filename.rsplit('site-packages/', 1)[-1]}:{frame.lineno}"
            print(f"| {where} | {stat.size_diff / n:,.0f} |")
        print("\n| type (sys.getsizeof) | bytes/conn |\n|---|---|")
        grown = Counter({t: types1[t] - types0.get(t, 0) for t in types1})
        for name, size in grown.most_common(top):
            print(f"| {name} | {size / n:,.0f} |")
        csub.stdin.write("quit\n")
        csub.stdin.flush()
        await trio.to_thread.run_sync(csub.wait)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if not build_csub():
        raise SystemExit("needs a C compiler for rtcore/loadtest/csrc/csub.c")
    tracemalloc.start()
    trio.run(measure, args.connections, args.top)


if __name__ == "__main__":
    main()
