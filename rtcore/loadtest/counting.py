"""Counting load processes (``python -m bench``'s Python load side): subscribers that count
deliveries, and a publisher / churner.

Each runs as its own OS process, driven by the harness over a pipe. Sockets are plain
non-blocking sockets on an epoll selector; the setup phase decodes frames, the measured phase
only counts them (decoding a sample for latency), so the load side stays cheap.
"""

from __future__ import annotations

import math
import selectors
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import msgpack

from rtcore.loadtest import wire

HANDSHAKE_WINDOW = 256
RECV = 256 * 1024


class Peer:
    __slots__ = ("sock", "inbuf", "http_done", "conn_id", "ready", "skip", "left", "count")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.http_done = False
        self.conn_id: str | None = None
        self.ready = False
        self.skip = 0
        self.left = b""
        self.count = 0


def open_peers(
    address: tuple[str, int], n: int, channel: str | None, timeout: float = 120.0
) -> tuple[list[Peer], float]:
    """Open ``n`` connections (hello with echo off, then join ``channel`` if given).

    Handshakes are pipelined (upgrade, hello and join in one write) and at most
    HANDSHAKE_WINDOW are in flight. Returns the peers and the seconds it took.
    """
    first = wire.request(t="hello", v=1, echo=False)
    if channel:
        first += wire.request(t="join", id=1, ch=channel)
    sel = selectors.DefaultSelector()
    peers: list[Peer] = []
    pending = 0
    done = 0
    start = time.monotonic()
    deadline = start + timeout
    while done < n:
        while pending < HANDSHAKE_WINDOW and len(peers) < n:
            peers.append(_connect(address, sel))
            pending += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {n} connections became ready")
        for key, _ in sel.select(1.0):
            peer = key.data
            data = peer.sock.recv(RECV)
            if not data:
                raise ConnectionError("server closed a connection during setup")
            if peer.ready:
                continue  # presence of later joiners: discarded
            if _setup_step(peer, data, first):
                pending -= 1
                done += 1
    sel.close()
    return peers, time.monotonic() - start


def _connect(address: tuple[str, int], sel: selectors.BaseSelector) -> Peer:
    """One connection, its upgrade request sent, registered with ``sel``."""
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(wire.UPGRADE)
    sock.setblocking(False)
    peer = Peer(sock)
    sel.register(sock, selectors.EVENT_READ, peer)
    return peer


def _setup_step(peer: Peer, data: bytes, first: bytes) -> bool:
    """Advance one connection's setup; ``first`` is sent once the upgrade is accepted."""
    buf = peer.inbuf + data
    if not peer.http_done:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            peer.inbuf = buf
            return False
        if not buf.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {buf[:80]!r}")
        peer.http_done = True
        peer.sock.setblocking(True)
        peer.sock.sendall(first)  # RFC 6455 4.1: frames only after the 101
        peer.sock.setblocking(False)
        buf = buf[end + 4 :]
    join = b"join" in first
    payloads, peer.inbuf = wire.frames(buf)
    for payload in payloads:
        frame = msgpack.unpackb(payload)
        t = frame.get("t")
        if t == "welcome":
            peer.conn_id = frame["conn"]
            if not join:
                peer.ready = True
        elif t == "ok" and frame.get("id") == 1:
            peer.ready = True
        elif t == "err":
            raise ConnectionError(f"setup refused: {frame}")
    return peer.ready


def quiesce(peers: list[Peer], quiet: float = 0.3, limit: float = 120.0) -> int:
    """Read and discard until no peer has received anything for ``quiet`` seconds."""
    sel = selectors.DefaultSelector()
    for p in peers:
        sel.register(p.sock, selectors.EVENT_READ, p)
    discarded = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        events = sel.select(quiet)
        if not events:
            break
        for key, _ in events:
            data = key.data.sock.recv(RECV)
            if not data:
                raise ConnectionError("server closed a connection while idle")
            discarded += len(data)
    sel.close()
    for p in peers:
        p.inbuf, p.skip, p.left, p.count = b"", 0, b"", 0
    return discarded


# layout: longer than 40 lines because it is the measuring loop: kept flat, with no call per
# recv, so that the load generator's own cost stays out of the figures.
def count_deliveries(
    peers: list[Peer], expected: int, timeout: float, sample_every: int = 0
) -> dict[str, Any]:
    """Count server frames on every peer until ``expected`` in total (or the timeout)."""
    sel = selectors.DefaultSelector()
    for p in peers:
        sel.register(p.sock, selectors.EVENT_READ, p)
    total = 0
    first = last = 0.0
    latencies: list[float] = []
    sampled_at: list[float] = []
    chunks = 0
    deadline = time.monotonic() + timeout
    closed = 0
    while total < expected:
        now = time.monotonic()
        if now > deadline:
            break
        for key, _ in sel.select(min(1.0, deadline - now)):
            p = key.data
            data = p.sock.recv(RECV)
            if not data:
                closed += 1
                sel.unregister(p.sock)
                continue
            received = time.monotonic()
            if p.left:
                data = p.left + data
            if sample_every and p.skip == 0:
                chunks += 1
                if chunks % sample_every == 0:
                    got = _sample(data, received)
                    latencies.extend(got)
                    sampled_at.extend(received for _ in got)
            n, p.skip, p.left = wire.count_frames(data, p.skip)
            if n:
                if not total:
                    first = received
                total += n
                p.count += n
                last = received
    sel.close()
    return {
        "total": total,
        "first": first,
        "last": last,
        "latencies": latencies,
        "sampled_at": sampled_at,
        "closed": closed,
        "min_per_peer": min((p.count for p in peers), default=0),
    }


def _sample(data: bytes, received: float) -> list[float]:
    payloads, _ = wire.frames(data[:4096])
    out = []
    for payload in payloads[:1]:
        try:
            frame = msgpack.unpackb(payload)
            out.append(received - frame["data"]["t0"])
        except (ValueError, KeyError, TypeError):
            pass
    return out


# -- process entry points -------------------------------------------------------------------


def subscriber_main(
    pipe: Connection, address: tuple[str, int], n: int, channel: str | None
) -> None:
    """A subscriber process: open, report, then count deliveries as told, until 'quit'."""
    try:
        peers, took = open_peers(address, n, channel)
        pipe.send(("ready", took))
        while True:
            cmd, args = pipe.recv()
            if cmd == "quiesce":
                pipe.send(("quiet", quiesce(peers)))
            elif cmd == "count":
                pipe.send(("counted", count_deliveries(peers, **args)))
            elif cmd == "quit":
                break
    except Exception as exc:  # report, so the harness can say what failed
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def publisher_main(pipe: Connection, address: tuple[str, int], channel: str, join: bool) -> None:
    """The publisher (joined to ``channel``, echo off) or churner (not joined) process."""
    try:
        (peer,), _ = open_peers(address, 1, channel if join else None)
        pipe.send(("ready", peer.conn_id))
        while True:
            cmd, args = pipe.recv()
            if cmd == "quiesce":
                pipe.send(("quiet", quiesce([peer])))
            elif cmd == "burst":
                pipe.send(("done", burst(peer, channel, **args)))
            elif cmd == "steady":
                pipe.send(("done", steady(peer, channel, **args)))
            elif cmd == "churn":
                pipe.send(("done", churn(peer, **args)))
            elif cmd == "quit":
                break
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def _send_frame(i: int, channel: str, pad: bytes) -> bytes:
    return wire.request(t="send", id=i, ch=channel, ev="b", data={"t0": time.monotonic(), "p": pad})


def _await_replies(peer: Peer, expected: int, timeout: float) -> tuple[float, int]:
    """Count reply frames on the publisher until ``expected`` or ``timeout`` seconds in all.

    Returns when the last one came and how many came.
    """
    deadline = time.monotonic() + timeout
    peer.sock.setblocking(True)
    got = 0
    skip, left = 0, b""
    try:
        while got < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            peer.sock.settimeout(remaining)
            try:
                data = peer.sock.recv(RECV)
            except TimeoutError:
                break
            if not data:
                raise ConnectionError("server closed the publisher")
            n, skip, left = wire.count_frames(left + data, skip)
            got += n
    finally:
        peer.sock.setblocking(False)
    return time.monotonic(), got


def burst(peer: Peer, channel: str, messages: int, pad: int, timeout: float) -> dict[str, float]:
    padding = b"x" * pad
    frames = b"".join(_send_frame(i + 2, channel, padding) for i in range(messages))
    peer.sock.setblocking(True)
    start = time.monotonic()
    peer.sock.sendall(frames)
    acked, replies = _await_replies(peer, messages, timeout)
    return {"start": start, "acked": acked, "replies": replies}


def steady(peer: Peer, channel: str, rate: float, seconds: float, pad: int) -> dict[str, float]:
    """Send at ``rate`` messages/s for ``seconds``, in 1 ms ticks, reading replies as we go."""
    padding = b"x" * pad
    total = int(rate * seconds)
    sent = 0
    peer.sock.setblocking(False)
    start = time.monotonic()
    replies = 0
    skip, left = 0, b""
    while sent < total:
        due = min(total, math.ceil((time.monotonic() - start) * rate))
        if due > sent:
            peer.sock.sendall(
                b"".join(_send_frame(i + 2, channel, padding) for i in range(sent, due))
            )
            sent = due
        try:
            data = peer.sock.recv(RECV)
            n, skip, left = wire.count_frames(left + data, skip)
            replies += n
        except BlockingIOError:
            pass
        time.sleep(0.0005)
    end = time.monotonic()
    if replies < total:  # a server that fell behind gets 15 s to catch up, no more
        replies += _await_replies(peer, total - replies, 15.0)[1]
    return {"start": start, "end": end, "sent": sent, "replies": replies}


def churn(peer: Peer, channel: str, pairs: int, timeout: float) -> dict[str, float]:
    """Join and leave ``channel`` ``pairs`` times, pipelined; every one is acked."""
    frames = b"".join(
        wire.request(t="join", id=2 * i + 10, ch=channel)
        + wire.request(t="leave", id=2 * i + 11, ch=channel)
        for i in range(pairs)
    )
    peer.sock.setblocking(True)
    start = time.monotonic()
    peer.sock.sendall(frames)
    acked, replies = _await_replies(peer, 2 * pairs, timeout)
    return {"start": start, "acked": acked, "replies": replies}
