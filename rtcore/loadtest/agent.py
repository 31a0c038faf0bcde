"""A load process: its share of the plan's connections on one selector loop, driven by the
coordinator (``runner``) over a pipe.

Commands in: ``go`` (senders start), ``storm`` (drop every connection and reconnect),
``stop``. Reports out: ``tick`` (cumulative counts, several times a second) and ``final``
(the counts and the per-second series). The loop stops by itself at the plan's deadline.
"""

from __future__ import annotations

import math
import random
import selectors
import time
from collections import Counter, deque
from multiprocessing.connection import Connection
from typing import Any

from rtcore.loadtest import plan as p
from rtcore.loadtest import stats
from rtcore.loadtest.peer import CLOSED, CONNECTING, READY, Peer, hello_frame

TICK = 0.2
"""Seconds between reports to the coordinator."""
HANDSHAKES = 256
"""Connections being set up at once, at most, per load process."""
BACKOFF_CAP = 30.0


def backoff(attempt: int, rng: random.Random) -> float:
    """The Python client's delay after a failed attempt: uniform below
    min(30, 0.5 * 2^(attempt-1)) seconds (rtcore.client)."""
    return rng.uniform(0, min(BACKOFF_CAP, 0.5 * 2 ** max(0, min(attempt - 1, 16))))


class Agent:
    def __init__(self, plan: p.Plan, worker: int, t0: float, pipe: Connection) -> None:
        self.plan = plan
        self.t0 = t0
        self.pipe = pipe
        self.rng = random.Random(worker)
        self.sel = selectors.DefaultSelector()
        self.peers = [self._peer(c) for c in plan.share(worker)]
        self.queue: deque[Peer] = deque(self.peers)
        self.phase = "setup"
        self.phase_start = time.monotonic()
        self.rate = plan.connect_rate / plan.workers
        self.started = 0
        self.handshaking = 0
        self.open = 0
        self.opened = 0
        self.failed = 0
        self.counts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.ready_in: Counter[str] = Counter()
        self.acked_in: Counter[str] = Counter()
        self.pending: dict[tuple[int, int], str] = {}
        self.sent: dict[int, int] = {}
        self.due: dict[int, float] = {}
        self.seconds: dict[int, stats.Second] = {}
        self.recent: deque[tuple[float, int]] = deque()

    def _peer(self, conn: p.Conn) -> Peer:
        tokens = self.plan.tokens
        token = tokens[conn.index % len(tokens)] if tokens else None
        profile = p.CHURN_MARK if conn.role == "churner" else None
        return Peer(
            conn, self.plan.targets[conn.target], hello_frame(self.plan.hello, token, profile)
        )

    def second(self) -> stats.Second:
        return self.seconds.setdefault(int(time.time() - self.t0), stats.Second())

    # -- what the connections report (peer.Tally) ------------------------------------------

    def ready(self, peer: Peer) -> None:
        self.handshaking -= 1
        self.open += 1
        self.opened += 1
        self.second().opened += 1
        if p.receivers(peer.conn):
            self.ready_in.update(peer.conn.channels)

    def lost(self, peer: Peer, why: str, was_ready: bool) -> None:
        if peer.sock is not None:
            self.sel.unregister(peer.sock)
        if was_ready:
            self.open -= 1
            self.closes[why] += 1
            self.second().closes[why] += 1
            if p.receivers(peer.conn):
                self.ready_in.subtract(peer.conn.channels)
        else:
            self.handshaking -= 1
            self.refusals[why] += 1
            self.second().refusals[why] += 1
        for key in [k for k in self.pending if k[0] == peer.conn.index]:
            del self.pending[key]  # no reply will come
        if self.phase == "storm":
            peer.retry_at = time.monotonic() + backoff(peer.attempt, self.rng)
            self.queue.append(peer)
        elif not was_ready:
            self.failed += 1

    def delivered(self, peer: Peer, data: Any) -> None:
        if not p.receivers(peer.conn):
            return
        self.counts["deliveries"] += 1
        second = self.second()
        second.deliveries += 1
        if isinstance(data, dict) and isinstance(data.get("t0"), float):
            key = stats.bucket(time.time() - data["t0"])
            second.hist[key] = second.hist.get(key, 0) + 1
            self.recent.append((time.monotonic(), key))

    def presence(self, peer: Peer, count: int) -> None:
        if count and p.receivers(peer.conn):
            self.counts["presence"] += count
            self.second().deliveries += count

    def acked(self, peer: Peer, request: int) -> None:
        channel = self.pending.pop((peer.conn.index, request), None)
        if channel is not None:
            self.counts["acked"] += 1
            self.acked_in[channel] += 1

    def refused_request(self, peer: Peer, request: int, code: str) -> None:
        self.pending.pop((peer.conn.index, request), None)
        self.counts["refused_requests"] += 1
        self.refusals[code] += 1
        self.second().refusals[code] += 1

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        deadline = time.monotonic() + self.plan.duration + 5.0
        next_tick = 0.0
        while self.phase != "stop" and time.monotonic() < deadline:
            now = time.monotonic()
            self._open_due(now)
            if self.phase == "go":
                self._send_due(now)
            for key, events in self.sel.select(0.005):
                self._event(key.data, events)
            if now >= next_tick:
                next_tick = now + TICK
                self._commands()
                self.pipe.send(("tick", self.snapshot()))
        for peer in self.peers:
            peer.close()
        self.pipe.send(("final", self.final()))

    def _commands(self) -> None:
        while self.pipe.poll():
            command = self.pipe.recv()
            if command == "storm":
                self._storm()
            elif command in ("go", "stop"):
                self.phase = command
                self.phase_start = time.monotonic()

    def _event(self, peer: Peer, events: int) -> None:
        try:
            if peer.state == CONNECTING:
                peer.connected(self)
                if peer.sock is not None:
                    self.sel.modify(peer.sock, selectors.EVENT_READ, peer)
            else:
                peer.readable(self)
        except OSError:
            if peer.state != CLOSED:
                peer.fail(self, "tcp")

    def _open_due(self, now: float) -> None:
        """Start connections: at the ramp rate in setup, at once (after their backoff) in
        the storm, never more than HANDSHAKES at a time."""
        allowed = math.inf
        if self.phase == "setup" and self.rate > 0:
            allowed = math.ceil((now - self.phase_start) * self.rate) - self.started
        for _ in range(len(self.queue)):
            if allowed <= 0 or self.handshaking >= HANDSHAKES:
                return
            peer = self.queue.popleft()
            if peer.retry_at > now:
                self.queue.append(peer)
                continue
            self.sel.register(peer.start(), selectors.EVENT_WRITE, peer)
            self.started += 1
            self.handshaking += 1
            allowed -= 1

    def _storm(self) -> None:
        """Drop every connection (a TCP reset, as a lost network does) and reconnect all."""
        self.phase = "storm"
        self.phase_start = time.monotonic()
        for peer in self.peers:
            if peer.sock is not None:
                self.sel.unregister(peer.sock)
                if peer.state == READY:
                    self.open -= 1
                    if p.receivers(peer.conn):
                        self.ready_in.subtract(peer.conn.channels)
                else:
                    self.handshaking -= 1
                peer.close(reset=True)
            peer.attempt, peer.retry_at = 0, 0.0
        self.queue = deque(self.peers)
        self.failed = 0

    def _send_due(self, now: float) -> None:
        for peer in self.peers:
            if peer.conn.role not in ("publisher", "sender", "churner") or peer.state != READY:
                continue
            index = peer.conn.index
            sent = self.sent.get(index, 0)
            if sent >= self.plan.messages:
                continue
            start = self.due.setdefault(index, now + self._stagger())
            due = self.plan.messages
            if self.plan.rate > 0:
                due = min(due, max(0, math.floor((now - start) * self.plan.rate) + 1))
            for k in range(sent, due):
                self._send_one(peer, k)
            self.sent[index] = max(sent, due)

    def _stagger(self) -> float:
        """Senders start at random points of their first period, so a room's members do not
        all send in the same millisecond."""
        return self.rng.uniform(0, 1 / self.plan.rate) if self.plan.rate > 0 else 0.0

    def _send_one(self, peer: Peer, k: int) -> None:
        channels = peer.conn.channels
        channel = channels[k % len(channels)]
        if peer.conn.role == "churner":
            rid = self._churn(peer, k, channel)
        else:
            data = {"t0": time.time(), "p": "x" * self.plan.size}
            rid = peer.request(t="send", ch=channel, ev=p.EVENT, data=data, echo=False)
        self.pending[(peer.conn.index, rid)] = channel
        self.counts["sent"] += 1
        self.second().sent += 1

    def _churn(self, peer: Peer, k: int, channel: str) -> int:
        """join, profile update, leave, in turn: one presence event per member each."""
        step = k % 3
        if step == 0:
            return peer.request(t="join", ch=channel, echo=False)
        if step == 1:
            return peer.request(t="profile", data=p.CHURN_MARK, echo=False)
        return peer.request(t="leave", ch=channel, echo=False)

    # -- reports ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts, and the latencies of the last second (for live percentiles)."""
        self.second().open = self.open
        horizon = time.monotonic() - 1.0
        while self.recent and self.recent[0][0] < horizon:
            self.recent.popleft()
        sends_done = all(
            self.sent.get(peer.conn.index, 0) >= self.plan.messages
            for peer in self.peers
            if peer.conn.role in ("publisher", "sender", "churner") and peer.state == READY
        )
        return {
            "connections": len(self.peers),
            "phase": self.phase,
            "open": self.open,
            "opened": self.opened,
            "failed": self.failed,
            "settled": self.open + self.failed == len(self.peers) and self.handshaking == 0,
            "sends_done": sends_done and self.phase == "go" and not self.pending,
            "counts": dict(self.counts),
            "refusals": dict(self.refusals),
            "closes": dict(self.closes),
            "ready_in": {k: v for k, v in self.ready_in.items() if v},
            "acked_in": dict(self.acked_in),
            "recent": dict(Counter(key for _, key in self.recent)),
        }

    def final(self) -> dict[str, Any]:
        snap = self.snapshot()
        snap["series"] = [self.seconds[t].to_json(t) for t in sorted(self.seconds)]
        return snap


def agent_main(plan: p.Plan, worker: int, t0: float, pipe: Connection) -> None:
    """A load process's entry point (multiprocessing)."""
    try:
        Agent(plan, worker, t0, pipe).run()
    except Exception as exc:  # report, so the coordinator can say what failed
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()
