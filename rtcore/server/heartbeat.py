"""The heartbeat: one task for all connections pings the silent and closes the dead
(protocol.md §3.3), revalidates sessions (an API key that just expired), and sweeps the
server's expired state; idle connections hold no timer of their own. Likewise one task
(:class:`HandshakeDeadlines`) closes the connections still without a valid hello at their
``handshake_timeout``: a connection in its handshake holds no cancel scope of its own.

It never dies: a failure while checking one connection closes that connection (1011, logged
once); a failure elsewhere in a pass is logged and the next pass comes anyway.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Mapping

import trio

from rtcore.core.outbox import Pending
from rtcore.protocol import CloseCode, wsframe
from rtcore.server.connection import Connection
from rtcore.server.flusher import Flusher

log = logging.getLogger("rtcore.server")

CHECKPOINT_EVERY = 1000
"""Connections a pass revalidates between two yields to other tasks."""
PING = wsframe.ping_frame()


class Heartbeat:
    """The heartbeat of a server's connections.

    Args:
        connections: the server's open connections, by id (read on every pass).
        pending: where pings are queued.
        flusher: poked after every pass.
        sweep: expires the server's other state, given the time on trio's and the wall clock.
        wall: the wall clock (Unix seconds).
    """

    def __init__(
        self,
        connections: Mapping[str, Connection],
        pending: Pending,
        flusher: Flusher,
        sweep: Callable[[float, float], None],
        wall: Callable[[], float],
    ) -> None:
        self._connections = connections
        self._pending = pending
        self._flusher = flusher
        self._sweep = sweep
        self._wall = wall

    async def run(self, interval: float) -> None:
        """A pass every half ``interval``, forever."""
        while True:
            await trio.sleep(interval / 2)
            try:
                await self.beat(interval)
            except Exception:
                log.exception("heartbeat pass failed")
            self._flusher.poke()

    async def beat(self, interval: float) -> None:
        """One pass over the server's state and every established connection."""
        now = trio.current_time()
        wall = self._wall()
        self._sweep(now, wall)
        for i, conn in enumerate(list(self._connections.values())):
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # other tasks run during a long pass
            if not conn.established:
                continue
            try:
                self._check(conn, now, wall, interval)
            except Exception:
                log.exception("heartbeat: connection %s (%s) failed", conn.id, conn.remote)
                conn.request_close(CloseCode.INTERNAL_ERROR, "internal error (logged)")

    def _check(self, conn: Connection, now: float, wall: float, interval: float) -> None:
        close = conn.session.revalidate(wall)  # e.g. an API key that just expired
        if close is not None:
            conn.request_close(close.code, close.reason)
            return
        silent = now - conn.last_seen
        if silent >= 2 * interval:
            conn.request_close(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two intervals")
        elif silent >= interval and not conn.pinged:
            conn.pinged = True
            self._pending.push(conn.outbox, PING)


class HandshakeDeadlines:
    """Connections in their handshake, by deadline; :meth:`run` closes each one that has
    no valid hello by then with 4001 (protocol.md §3.1), on time.

    A heap (deadlines come in order while ``handshake_timeout`` stays the same; a reload may
    shorten it). A connection stays in it until its deadline even if it was established or
    closed before (one tuple: bounded by the accept rate times the timeout).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()
        self._earlier = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, conn: Connection, deadline: float) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._order), conn))
        if heap[0][2] is conn:  # a new first deadline: the task sleeps until a later one
            self._earlier.set()

    async def run(self) -> None:
        """Forever: close the connections whose deadline passed without a hello."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                conn = heapq.heappop(heap)[2]
                if not conn.established and not conn.closing:
                    conn.request_close(
                        CloseCode.HELLO_TIMEOUT, "no hello within the handshake timeout"
                    )
            self._earlier = trio.Event()
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await self._earlier.wait()
