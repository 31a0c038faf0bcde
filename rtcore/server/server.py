"""The trio server: listeners, connections, flusher, heartbeat, shutdown, in-process API.

Embedding::

    server = rtcore.Server(config)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve)
        ...
        server.send("default", "room-1", "news", {"x": 1})   # from the host app
        server.shutdown()                                    # going-away closes, then returns

``serve`` returns once shutdown completes: every connection gets a 1001 close and up to
``limits.shutdown_grace`` seconds to end before it is cancelled.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import trio

from rtcore.app import App, Delivery, MessageIds
from rtcore.config import Config
from rtcore.outbox import Pending
from rtcore.protocol import CloseCode, RtcoreError, wsframe
from rtcore.server.connection import Connection
from rtcore.server.flusher import Flusher
from rtcore.session import check_channel, check_event

log = logging.getLogger("rtcore.server")


class UnknownAppError(RtcoreError, LookupError):
    """The host app named an app this server does not host."""


class Server:
    """A realtime server hosting one or more apps.

    Args:
        config: settings; the embedded defaults when omitted.
        flush_window: the longest a flush pass waits to batch more writes under load.
    """

    def __init__(self, config: Config | None = None, *, flush_window: float = 0.002) -> None:
        self.config = config or Config()
        self.node = secrets.token_hex(4)
        self.pending = Pending()
        ids = MessageIds(self.node)
        self.apps: dict[str, App] = {
            a.name: App(a.name, self.pending, ids) for a in self.config.apps
        }
        self.flusher = Flusher(self.pending, self.config.limits.outbound_buffer_bytes, flush_window)
        self.connections: dict[str, Connection] = {}
        self._stop = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.addresses: list[tuple[str, int]] = []

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; reports the bound addresses when ready."""
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.addresses = [_address(lst) for lst in listeners]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            nursery.start_soon(self._heartbeat)
            async with trio.open_nursery() as conn_nursery:
                accept_scope = trio.CancelScope()

                async def accept(listener: trio.SocketListener) -> None:
                    with accept_scope:
                        while True:  # SocketListener.accept retries on EMFILE and the like
                            stream = await listener.accept()
                            conn_nursery.start_soon(self._handle, stream.socket)

                for listener in listeners:
                    nursery.start_soon(accept, listener)
                log.info("rtcore serving on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
                task_status.started(self.addresses)
                await self._stop.wait()
                accept_scope.cancel()
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                await self._close_all()
                conn_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001 and let :meth:`serve` return."""
        self._stop.set()

    async def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.request_close(CloseCode.GOING_AWAY, "server shutting down")
        self.flusher.poke()
        with trio.move_on_after(self.config.limits.shutdown_grace):
            await self._idle.wait()
        if self.connections:
            log.warning("%d connections did not close within the grace period", len(self.connections))

    async def _handle(self, sock: trio.socket.SocketType) -> None:
        if self._stop.is_set():
            sock.close()
            return
        conn_id = secrets.token_urlsafe(9)
        while conn_id in self.connections:  # pragma: no cover - 72 random bits
            conn_id = secrets.token_urlsafe(9)
        conn = Connection(self, sock, conn_id)
        self.connections[conn_id] = conn
        self._idle = trio.Event()
        await conn.run()

    def forget(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if not self.connections:
            self._idle.set()

    async def _heartbeat(self) -> None:
        """One task for all connections: ping the silent, close the dead (protocol.md §3.3)."""
        interval = self.config.limits.heartbeat_interval
        ping = wsframe.ping_frame()
        while True:
            await trio.sleep(interval / 2)
            now = trio.current_time()
            for conn in list(self.connections.values()):
                if not conn.established:
                    continue
                silent = now - conn.last_seen
                if silent >= 2 * interval:
                    conn.request_close(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two intervals")
                elif silent >= interval and not conn.pinged:
                    conn.pinged = True
                    self.pending.push(conn.outbox, ping)
            self.flusher.poke()

    # -- in-process API for the host application --------------------------------------------

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise UnknownAppError(f"this server hosts no app {name!r}") from None

    def send(self, app: str, channel: str, event: str, data: Any = None) -> Delivery:
        """Deliver an event to every member of ``channel`` (sender: none, the host app)."""
        check_channel(channel)
        check_event(event)
        sent = self.app(app).send(channel, event, data, now=time.time())
        self.flusher.poke()
        return sent

    def broadcast(self, app: str, event: str, data: Any = None) -> Delivery:
        """Deliver an event to every connection of ``app``."""
        check_event(event)
        sent = self.app(app).broadcast(event, data, now=time.time())
        self.flusher.poke()
        return sent

    def members(self, app: str, channel: str) -> list[dict[str, Any]]:
        """Every member of ``channel`` as ``{"id", "user", "data"}``, in join order."""
        check_channel(channel)
        return [m.info() for m in self.app(app).table.members(channel).values()]

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "slow_consumers": self.flusher.slow_consumers,
            "apps": {
                name: {"connections": len(a.table), "channels": len(a.table.channels())}
                for name, a in self.apps.items()
            },
        }


def _address(listener: trio.SocketListener) -> tuple[str, int]:
    host, port = listener.socket.getsockname()[:2]
    return str(host), int(port)
