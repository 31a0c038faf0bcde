"""The flusher: one task that writes every connection's pending bytes (trio).

Theory of operation: fan-out only appends framed bytes to outboxes and marks them pending.
The flusher wakes when something is pending, and in one pass writes each pending outbox with a
single non-blocking ``write`` of everything it holds -- so a burst of publishes costs one
syscall per subscriber per pass, not one per delivery. Subscribers of the same channel usually
hold the very same list of frames: the joined buffer of the previous outbox is reused when the
lists are equal (a pointer comparison per item, done in C).

Batching adapts to load (:mod:`rtcore.core.limits.flush_policy`): after a pass the flusher
waits about as long as that pass took, at most ``window`` seconds, so light load is flushed
almost at once and heavy load is batched into passes that each carry more.

A socket that does not take everything hands its connection to the connection's own drain
task. Bytes queued for a connection beyond ``outbound_buffer_bytes`` make it a slow consumer:
it is closed with 4008 and counted, and its queue is dropped.

Error boundary: a failure while writing one connection closes that connection with 1011
(logged once, however many passes meet it before it is gone) and the pass goes on with
the others; a failure outside the per-connection work is logged and the task goes on. The
guard is a ``try`` around each connection's work, which costs nothing when nothing fails.

Observation (rtcore.observe) costs nothing per connection: a pass counts its connections
from the sizes of the groups it takes, and reports once -- its duration, that count and the
age of its oldest publication, stamped by the first ``poke`` after the previous pass. (Bytes
and deliveries are counted where they are queued, once per publication.)
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Protocol

import trio

from rtcore.core.limits.flush_policy import flush_delay
from rtcore.core.outbox import Outbox, Pending
from rtcore.observe.events import NULL_OBSERVER, FlusherStatistics, FlushPass, Observer
from rtcore.protocol import CloseCode

log = logging.getLogger("rtcore.flusher")


class Writer(Protocol):
    """What the flusher needs of a connection (rtcore.server.connection.Connection: the
    owner of each outbox it writes)."""

    id: str
    failed: bool
    """Writing to it failed once (a bug, logged); it is closing with 1011."""
    blocked: bool
    """A drain task owns the socket until the outbox is empty."""
    queued: int
    """Bytes in the outbox counted so far (kept while blocked; the budget check)."""
    counted: int
    """How many outbox items ``queued`` covers."""

    @property
    def remote(self) -> str: ...

    @property
    def closing(self) -> bool: ...

    @property
    def outbox(self) -> Outbox: ...

    def write_now(self, data: bytes | memoryview) -> int: ...

    def start_drain(self) -> None: ...

    def request_close(self, code: int, reason: str, *, discard_pending: bool = False) -> None: ...


class Flusher:
    """Writes pending outboxes in passes; see the module docstring."""

    def __init__(
        self,
        pending: Pending,
        budget: int,
        window: float = 0.002,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._pending = pending
        self.budget = budget
        """Outbound bytes a connection may have queued (limits.outbound_buffer_bytes)."""
        self._window = window
        self._wake = trio.Event()
        self._last_end = -1e9
        self._last_duration = 0.0
        self.statistics = FlusherStatistics()
        self.observer = observer
        self._oldest: float | None = None
        """When something first became pending after the last pass (trio's clock)."""

    @property
    def slow_consumers(self) -> int:
        """Connections closed for exceeding their outbound budget, since start."""
        return self.statistics.slow_consumers

    def poke(self) -> None:
        """Wake the flusher if anything is pending (cheap; called after each read)."""
        if self._pending:
            if self._oldest is None:  # publications are queued in the step that pokes
                self._oldest = trio.current_time()
            self._wake.set()

    async def run(self) -> None:
        while True:
            # A batch that held something back (a paced presence diff) is due then.
            with trio.move_on_at(self._pending.batch_due):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            wait = flush_delay(now, self._last_end, self._last_duration, self._window)
            if wait > 0:
                await trio.sleep(wait)
                now = trio.current_time()
            visited = 0
            try:
                visited = self.flush(now)
            except Exception:  # not one connection's: flush() bounds those
                log.exception("flush pass failed")
            self._last_end = trio.current_time()
            self._last_duration = self._last_end - now
            if visited >= 64:  # enough writes to say what one costs (paces presence diffs)
                self._pending.observe_write_cost(self._last_duration / visited)

    def flush(self, now: float = math.inf) -> int:
        """One pass over everything pending (batches: what is due at ``now``); reports it to
        the observer and returns how many connections it visited."""
        started = time.perf_counter()
        connections = self._write_pending(now)
        oldest, self._oldest = self._oldest, None
        stats = self.statistics
        stats.passes += 1
        stats.connections += connections
        self.observer.flush_pass(
            FlushPass(
                time.perf_counter() - started,
                connections,
                None if oldest is None else trio.current_time() - oldest,
            )
        )
        return connections

    def _write_pending(self, now: float) -> int:
        """Write everything pending; returns how many connections that visited."""
        outboxes, groups = self._pending.take(now)
        last: list[bytes | memoryview] = []
        joined = b""
        for group in groups:
            for member in group.values():
                try:
                    last, joined = self._flush_one(member.outbox, last, joined)
                except Exception:
                    self._failed(member.outbox)
        for outbox in outboxes:
            try:
                last, joined = self._flush_one(outbox, last, joined)
            except Exception:
                self._failed(outbox)
        return len(outboxes) + sum(map(len, groups))  # per group, not per connection

    def _failed(self, outbox: Outbox) -> None:
        """Writing one connection failed (a bug): close it with 1011, keep the pass going."""
        conn: Writer | None = outbox.owner
        if conn is None:
            log.exception("flush: an outbox without a connection failed")
            outbox.closed = True
            return
        if not conn.failed:  # a later pass may fail again before it is gone: log once
            conn.failed = True
            log.exception("flush: connection %s (%s) failed", conn.id, conn.remote)
        conn.request_close(
            CloseCode.INTERNAL_ERROR, "internal error (logged)", discard_pending=True
        )

    def _flush_one(
        self, outbox: Outbox, last: list[bytes | memoryview], joined: bytes
    ) -> tuple[list[bytes | memoryview], bytes]:
        items = outbox.items
        if not items or outbox.closed:
            return last, joined
        conn: Writer = outbox.owner
        if conn.blocked:
            self._account(conn, items)
            return last, joined
        k = len(items)
        if k == 1:
            data = items[0]
        elif items == last:  # same frames as the previous subscriber: reuse its buffer
            data = joined
        else:
            last, joined = items[:], b"".join(items)
            data = joined
        n = conn.write_now(data)
        if n < 0:
            outbox.closed = True
            conn.request_close(CloseCode.NORMAL, "peer is gone")
            return last, joined
        if n == len(data):
            del items[:k]
            return last, joined
        rest = memoryview(data)[n:]
        items[:k] = [rest]
        conn.counted, conn.queued = 1, len(rest)
        if conn.queued > self.budget:
            self._slow(conn)
        else:
            conn.start_drain()
        return last, joined

    def _account(self, conn: Writer, items: list[bytes | memoryview]) -> None:
        if len(items) > conn.counted:
            conn.queued += sum(map(len, itertools.islice(items, conn.counted, None)))
            conn.counted = len(items)
            if conn.queued > self.budget:
                self._slow(conn)

    def slow_reply(self, conn: Writer) -> None:
        """The session refused to queue a reply beyond the budget (it closes with 4008 itself):
        counted and reported like any slow consumer."""
        self.statistics.slow_consumers += 1
        self.observer.slow_consumer(conn.id, conn.remote, sum(map(len, conn.outbox.items)))

    def _slow(self, conn: Writer) -> None:
        if conn.closing:  # already on its way out: count it once
            return
        self.statistics.slow_consumers += 1
        self.observer.slow_consumer(conn.id, conn.remote, conn.queued)
        conn.request_close(
            CloseCode.SLOW_CONSUMER,
            f"outbound buffer exceeded {self.budget} bytes",
            discard_pending=True,
        )
