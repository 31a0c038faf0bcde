"""The heartbeat: one task for all connections pings the silent and closes the dead
(protocol.md §3.3), revalidates sessions (an API key that just expired), and sweeps the
server's expired state; idle connections hold no timer of their own. Likewise one task
(:class:`HandshakeDeadlines`) closes the connections still without a valid hello at their
``handshake_timeout``: a connection in its handshake holds no cancel scope of its own.

It never dies: a failure while checking one connection closes that connection (1011, logged
once); a failure elsewhere in a pass is logged and the next pass comes anyway.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
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
PING_TICK = 0.05
"""Seconds between two slices of a pass's pings (rtcore.server.heartbeat.Heartbeat._ping)."""


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
        """A pass every quarter ``interval``, forever; a pass's pings are spread over the
        quarter that follows it."""
        period = interval / 4
        while True:
            await trio.sleep(period)
            start = trio.current_time()
            try:
                due = await self.beat(interval)
                self._flusher.poke()
                await self._ping(due, start + period, interval)
            except Exception:
                log.exception("heartbeat pass failed")
            self._flusher.poke()

    async def beat(self, interval: float) -> list[Connection]:
        """One pass over the server's state and every established connection; returns the
        connections due a ping (silent for ``interval``)."""
        now = trio.current_time()
        wall = self._wall()
        self._sweep(now, wall)
        due: list[Connection] = []
        for i, conn in enumerate(list(self._connections.values())):
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # other tasks run during a long pass
            if not conn.established:
                continue
            try:
                if self._check(conn, now, wall, interval):
                    due.append(conn)
            except Exception:
                log.exception("heartbeat: connection %s (%s) failed", conn.id, conn.remote)
                conn.request_close(CloseCode.INTERNAL_ERROR, "internal error (logged)")
        return due

    def _check(self, conn: Connection, now: float, wall: float, interval: float) -> bool:
        """Close ``conn`` if it is due a close; True if it is due a ping."""
        close = conn.session.revalidate(wall)  # e.g. an API key that just expired
        if close is not None:
            conn.request_close(close.code, close.reason)
            return False
        silent = now - conn.last_seen
        if silent >= 2 * interval:
            conn.request_close(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two intervals")
            return False
        return silent >= interval and not conn.pinged

    async def _ping(self, due: list[Connection], until: float, interval: float) -> None:
        """Ping ``due`` in slices spread until ``until`` (trio's clock).

        Connections opened together fall silent together: pinged in one pass, their pongs
        would all arrive at once, and the deliveries behind them would wait for a thousand
        reads (the 36-64 ms outliers of bench/RESULTS.md's soak). One slice every
        :data:`PING_TICK` seconds spreads them, and they stay spread: each connection's
        silence then starts from its own pong.
        """
        if not due:
            return
        slices = max(1, int((until - trio.current_time()) / PING_TICK))
        per = -(-len(due) // slices)  # ceil
        for start in range(0, len(due), per):
            if start:
                await trio.sleep(PING_TICK)
            now = trio.current_time()
            for conn in due[start : start + per]:
                # still silent and open? (it may have spoken or closed since the pass)
                if conn.established and not conn.pinged and now - conn.last_seen >= interval:
                    conn.pinged = True
                    self._pending.push(conn.outbox, PING)
            self._flusher.poke()


class HandshakeDeadlines:
    """Connections in their handshake, in the order they came -- so by deadline, the
    timeout being the same for all; :meth:`run` closes each one still without a valid hello
    at its deadline with 4001 (protocol.md §3.1), on time.

    A connection leaves as soon as its hello was valid or it closed (:meth:`done`): an
    established connection costs nothing here, and a closed one is not kept alive. The
    deadline is ``opened`` plus the timeout read when it is due, so a reload that changes
    ``handshake_timeout`` applies to the connections already waiting.

    Args:
        timeout: the current ``handshake_timeout`` (seconds).
    """

    def __init__(self, timeout: Callable[[], float]) -> None:
        self._timeout = timeout
        self._waiting: OrderedDict[str, Connection] = OrderedDict()
        self._earlier = trio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, conn: Connection) -> None:
        self._waiting[conn.id] = conn
        if len(self._waiting) == 1:  # a first deadline: the task may be sleeping for good
            self._earlier.set()

    def done(self, conn: Connection) -> None:
        """``conn`` said a valid hello, or closed: no deadline any more."""
        self._waiting.pop(conn.id, None)

    async def run(self) -> None:
        """Forever: close the connections whose deadline passed without a hello."""
        waiting = self._waiting
        while True:
            now, timeout = trio.current_time(), self._timeout()
            while waiting:
                conn = next(iter(waiting.values()))
                if conn.opened + timeout > now:
                    break
                del waiting[conn.id]
                if not conn.established and not conn.closing:
                    conn.request_close(
                        CloseCode.HELLO_TIMEOUT, "no hello within the handshake timeout"
                    )
            self._earlier = trio.Event()
            first = next(iter(waiting.values()), None)
            with trio.move_on_at(math.inf if first is None else first.opened + timeout):
                await self._earlier.wait()
