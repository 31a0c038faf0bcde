"""Why fan-out appends to per-connection outboxes drained by one flusher task rather than
sending into a trio memory channel per connection: ``python -m bench.fanout_design --help``.

Both designs, stripped to their fan-out, over real sockets (socket pairs in this process):
N connections in one channel, M pre-encoded messages of ``--size`` bytes published in
bursts of ``--batch`` per scheduler turn; a reader task per connection drains the far end
and counts bytes, so a run ends when every connection received every message.

- **channels**: a bounded ``trio.open_memory_channel`` per connection (``--queue`` messages:
  a queue counts messages, not bytes) and one writer task per connection, which takes what
  its channel holds (``receive`` then ``receive_nowait`` until empty), joins it and
  ``send_all``s it: the memory-channel design, with writes coalesced as fairly as it allows.
  The publisher's ``send_nowait`` raises ``WouldBlock`` on a full queue; that connection is
  counted as dropped (rtcore would close it as slow).
- **outbox**: a byte buffer per connection (bounded by bytes, like
  ``limits.outbound_buffer_bytes``) and one flusher task that, after each burst, writes
  every pending connection with one non-blocking ``send``; a socket that is full gets a
  drain task of its own until it is empty (rtcore's ``server/flusher.py`` and
  ``server/transport.py``, in miniature).

Each design runs ``--rounds`` times, alternating; the table shows the median deliveries per
second of wall time and of process CPU time. It measures the designs, not rtcore's server.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable

import trio
import trio.lowlevel


async def _drain(sock: trio.socket.SocketType, expected: int, done: Callable[[], None]) -> None:
    received = 0
    while received < expected:
        chunk = await sock.recv(1 << 16)
        if not chunk:
            break
        received += len(chunk)
    done()


async def channels(socks: list[socket.socket], batches: list[list[bytes]], queue: int) -> int:
    """Memory channel per connection, one writer task each; returns connections dropped."""
    dropped = 0
    async with trio.open_nursery() as nursery:
        senders: list[trio.MemorySendChannel[bytes] | None] = []
        for sock in socks:
            send, receive = trio.open_memory_channel[bytes](queue)
            senders.append(send)
            nursery.start_soon(_writer, sock, receive)
        for batch in batches:
            for message in batch:
                for i, send in enumerate(senders):
                    if send is None:
                        continue
                    try:
                        send.send_nowait(message)
                    except trio.WouldBlock:
                        dropped += 1
                        send.close()
                        senders[i] = None
            await trio.lowlevel.checkpoint()
        for send in senders:
            if send is not None:
                send.close()
    return dropped


async def _writer(sock: socket.socket, receive: trio.MemoryReceiveChannel[bytes]) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with receive:
        async for first in receive:
            parts = [first]
            while True:
                try:
                    parts.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await stream.send_all(b"".join(parts))


async def outbox(socks: list[socket.socket], batches: list[list[bytes]], budget: int) -> int:
    """Byte buffer per connection, one flusher; returns connections dropped (over budget)."""
    buffers = [bytearray() for _ in socks]
    draining: set[int] = set()
    dropped: set[int] = set()
    async with trio.open_nursery() as nursery:
        for batch in batches:
            for message in batch:
                for i, buf in enumerate(buffers):
                    if i not in dropped:
                        buf += message
                        if len(buf) > budget:
                            dropped.add(i)
                            buf.clear()
            for i, buf in enumerate(buffers):  # the flusher's pass: one write per connection
                if buf and i not in draining:
                    try:
                        sent = socks[i].send(buf)
                    except BlockingIOError:
                        sent = 0
                    del buf[:sent]
                    if buf:
                        draining.add(i)
                        nursery.start_soon(_drain_task, socks[i], buf, draining, i)
            await trio.lowlevel.checkpoint()
    return len(dropped)


async def _drain_task(sock: socket.socket, buf: bytearray, draining: set[int], i: int) -> None:
    while buf:
        await trio.lowlevel.wait_writable(sock)
        try:
            sent = sock.send(buf)
        except BlockingIOError:
            continue
        del buf[:sent]
    draining.discard(i)


async def run(design: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, dropped) of one run of ``design``."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(args.n)]
    for near_sock, far_sock in pairs:
        near_sock.setblocking(False)
        far_sock.setblocking(False)
    message = b"x" * args.size
    batches = [[message] * args.batch for _ in range(args.m // args.batch)]
    total = args.size * args.batch * len(batches)
    left = [args.n]

    def done() -> None:
        left[0] -= 1

    wall, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _, far in pairs:
            nursery.start_soon(_drain, trio.socket.from_stdlib_socket(far), total, done)
        near = [p[0] for p in pairs]
        if design == "channels":
            dropped = await channels(near, batches, args.queue)
        else:
            dropped = await outbox(near, batches, args.budget)
        for sock in near:
            sock.shutdown(socket.SHUT_WR)
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    for near_sock, far in pairs:
        near_sock.close()
        far.close()
    return elapsed[0], elapsed[1], dropped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout_design",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", type=int, default=1000, help="connections in the channel")
    parser.add_argument("-m", type=int, default=2000, help="messages")
    parser.add_argument("--batch", type=int, default=20, help="messages per scheduler turn")
    parser.add_argument("--size", type=int, default=110, help="bytes per message")
    parser.add_argument("--queue", type=int, default=1024, help="memory channel size")
    parser.add_argument("--budget", type=int, default=1 << 20, help="outbox bytes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float, int]]] = {"channels": [], "outbox": []}
    for _ in range(args.rounds):
        for design in results:
            results[design].append(trio.run(run, design, args))
    deliveries = args.n * args.batch * (args.m // args.batch)
    print(
        f"{args.n} connections, {deliveries:,} deliveries of {args.size} B, "
        f"bursts of {args.batch}, {args.rounds} rounds (medians)\n"
    )
    print("| design | deliveries/s (wall) | deliveries/s (CPU) | dropped |")
    print("|---|---|---|---|")
    for design, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        dropped = max(r[2] for r in runs)
        print(f"| {design} | {deliveries / wall:,.0f} | {deliveries / cpu:,.0f} | {dropped} |")


if __name__ == "__main__":
    main()
