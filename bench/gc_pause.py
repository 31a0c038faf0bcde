"""What the cyclic garbage collector costs a server with many connections: the pause of a full
collection, and the cyclic garbage a connection leaves when it closes.

python -m bench.gc_pause [-n 10000] [--rounds 5]

Runs an rtcore server in this process, opens N connections with the C load client
(rtcore/loadtest/csrc/csub.c: upgrade, hello with presence diffs, join into one channel),
then measures, CPU time (``time.thread_time``, robust on a busy machine), min of ``--rounds``:

- a full collection (``gc.collect()``, what CPython runs when its oldest generation is due:
  the server stops for that long) with everything tracked, and a pass of ``rtcore serve``'s
  policy once it has frozen the connections (rtcore.server.gc_policy: a collection of what
  is not frozen, then a freeze: from then on, what a collection costs);
- the objects the collector tracks per connection;
- the cyclic garbage the N connections leave when they all close (objects only the collector
  frees, per connection): with none, objects frozen while in use cannot leak when freed.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import time
from collections.abc import Callable

import trio

import rtcore
from bench.conn_memory import idle_config
from bench.harness import build_csub
from rtcore.loadtest import native, wire
from rtcore.server.gc_policy import GcFreezer


def best_ms(step: Callable[[], object], rounds: int) -> float:
    """The shortest of ``rounds`` runs of ``step``, in ms of this thread's CPU: a full
    collection (``gc.collect``), or a pass of rtcore.server.gc_policy (``GcFreezer.settle``: a
    collection of what is not frozen, then a freeze -- with everything frozen, what a
    collection costs the server from then on)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        step()
        best = min(best, time.thread_time() - t0)
    return best * 1000


async def wait_until_closed(server: rtcore.Server, limit: float = 60.0) -> None:
    with trio.fail_after(limit):
        while server.connections:  # noqa: ASYNC110 (no event says "all closed": poll, bounded)
            await trio.sleep(0.05)


async def open_connections(host: str, port: int, n: int) -> subprocess.Popen[str]:
    """N connections from the C client, set up and idle."""
    first = wire.request(t="hello", v=1, echo=False, features=["presence_diffs"])
    first += wire.request(t="join", id=1, ch="c")
    csub = subprocess.Popen(  # noqa: ASYNC220 (spawning returns at once; reads are in threads)
        [str(native.binary_path("csub")), host, str(port), str(n), first.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert csub.stdout is not None
    line = await trio.to_thread.run_sync(csub.stdout.readline)
    if not line.startswith("ready"):
        raise SystemExit(f"load client failed: {line}")
    await trio.sleep(1.0)  # idle: every reply written, every buffer drained
    return csub


async def close_all(csub: subprocess.Popen[str], server: rtcore.Server) -> int:
    """Close the client's connections; the cyclic garbage they left (objects)."""
    assert csub.stdin is not None
    csub.stdin.write("quit\n")
    csub.stdin.flush()
    await trio.to_thread.run_sync(csub.wait)
    await wait_until_closed(server)
    gc.disable()  # count what only the collector frees
    try:
        return gc.collect()
    finally:
        gc.enable()


async def measure(n: int, rounds: int) -> None:
    server = rtcore.Server(idle_config())
    async with trio.open_nursery() as nursery:
        (host, port), *_ = await nursery.start(server.serve)
        gc.collect()
        base_ms, base_objects = best_ms(gc.collect, rounds), len(gc.get_objects())
        csub = await open_connections(host, port, n)
        gc.collect()
        per_conn = (len(gc.get_objects()) - base_objects) / n
        full_ms = best_ms(gc.collect, rounds)
        freezer = GcFreezer()
        freezer.settle()  # the first pass freezes what is there
        pass_ms = best_ms(freezer.settle, rounds)
        gc.unfreeze()
        gc.collect()
        garbage = await close_all(csub, server)
        print(f"{n:,} connections (hello with presence diffs + join)\n")
        print("| | value |\n|---|---|")
        print(f"| objects tracked by the collector, per connection | {per_conn:.1f} |")
        print(f"| full collection, server started, no connections | {base_ms:.1f} ms |")
        print(f"| full collection with {n:,} connections | {full_ms:.1f} ms |")
        print(f"| a pass of `rtcore serve`'s policy with {n:,} connections | {pass_ms:.2f} ms |")
        print(f"| cyclic garbage per closed connection (objects) | {garbage / n:.2f} |")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not build_csub():
        raise SystemExit("needs a C compiler for rtcore/loadtest/csrc/csub.c")
    trio.run(measure, args.connections, args.rounds)


if __name__ == "__main__":
    main()
