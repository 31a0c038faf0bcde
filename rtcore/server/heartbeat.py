"""The heartbeat: one task for all connections pings the silent and closes the dead
(protocol.md §3.3), revalidates sessions (an API key that just expired), and sweeps the
server's expired state; idle connections hold no timer of their own.

It never dies: a failure while checking one connection closes that connection (1011, logged
once); a failure elsewhere in a pass is logged and the next pass comes anyway.
"""

from __future__ import annotations

import logging
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
