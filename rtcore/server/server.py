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

import ipaddress
import logging
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

import trio

from rtcore import api
from rtcore.admission import Admission
from rtcore.app import App, MessageIds
from rtcore.broker import MemoryBroker
from rtcore.config import Config, load
from rtcore.hub import Member
from rtcore.observe import Observer, ServerStatistics
from rtcore.outbox import Pending
from rtcore.protocol import CloseCode, RtcoreError, wsframe
from rtcore.server import http, observing
from rtcore.server.connection import Connection
from rtcore.server.flusher import Flusher
from rtcore.session import Close

log = logging.getLogger("rtcore.server")


class UnknownAppError(RtcoreError, LookupError):
    """The host app named an app this server does not host."""


class Server:
    """A realtime server hosting one or more apps.

    Args:
        config: settings; the embedded defaults when omitted.
        flush_window: the longest a flush pass waits to batch more writes under load.
        metrics: Prometheus metrics (``GET /metrics`` on the server-API port); by default on
            when the server API is.
        observer: told of connections, refusals and flush passes too (rtcore.observe).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        flush_window: float = 0.002,
        metrics: bool | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config or Config()
        self.statistics = ServerStatistics()
        self.observer, self.log_observer, self.metrics = observing.setup(self, metrics, observer)
        self.node = secrets.token_hex(4)
        self.pending = Pending()
        ids = MessageIds(self.node)
        self.broker = MemoryBroker()
        self.apps: dict[str, App] = {
            a.name: App(a, self.pending, ids, self.broker, self.observer) for a in self.config.apps
        }
        self.flusher = Flusher(
            self.pending, self.config.limits.outbound_buffer_bytes, flush_window, self.observer
        )
        self.admission = Admission(self.config.limits)
        self._ids = ids
        self.connections: dict[str, Connection] = {}
        self._stop = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.addresses: list[tuple[str, int]] = []
        self.api_addresses: list[tuple[str, int]] = []
        """Where the server API (HTTP) listens; empty when it is off."""

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; reports the bound addresses when ready."""
        listeners: list[Any] = []
        for host in self.config.hosts():
            listeners += await trio.open_tcp_listeners(self.config.port, host=host)
        self.addresses = [_address(lst) for lst in listeners]
        tls = self._tls_context()
        if tls is not None:
            listeners = [trio.SSLListener(lst, tls, https_compatible=True) for lst in listeners]
        self._warn_if_exposed()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            nursery.start_soon(self._heartbeat)
            if self.config.api_port is not None:
                api_listeners = await trio.open_tcp_listeners(
                    self.config.api_port, host=self.config.api_host
                )
                self.api_addresses = [_address(lst) for lst in api_listeners]
                nursery.start_soon(self._serve_api, api_listeners)
                log.info(
                    "server API on %s", ", ".join(f"http://{h}:{p}" for h, p in self.api_addresses)
                )
            async with trio.open_nursery() as conn_nursery:
                accept_scope = trio.CancelScope()

                async def accept(listener: trio.SocketListener) -> None:
                    with accept_scope:
                        while True:  # SocketListener.accept retries on EMFILE and the like
                            stream = await listener.accept()
                            if isinstance(stream, trio.SSLStream):
                                sock = stream.transport_stream.socket
                                conn_nursery.start_soon(self._handle, sock, stream)
                            else:
                                conn_nursery.start_soon(self._handle, stream.socket, None)

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
        observing.stopped(self)

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001 and let :meth:`serve` return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """:meth:`shutdown` was called."""
        return self._stop.is_set()

    async def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.request_close(CloseCode.GOING_AWAY, "server shutting down")
        self.flusher.poke()
        with trio.move_on_after(self.config.limits.shutdown_grace):
            await self._idle.wait()
        if self.connections:
            log.warning(
                "%d connections did not close within the grace period", len(self.connections)
            )

    async def _handle(self, sock: trio.socket.SocketType, tls: trio.SSLStream[Any] | None) -> None:
        if self._stop.is_set():
            sock.close()
            return
        conn_id = secrets.token_urlsafe(9)
        while conn_id in self.connections:  # pragma: no cover - 72 random bits
            conn_id = secrets.token_urlsafe(9)
        conn = Connection(self, sock, conn_id, tls)
        self.connections[conn_id] = conn
        self.statistics.accepted += 1
        if self._idle.is_set():  # no longer idle
            self._idle = trio.Event()
        opened = trio.current_time()
        try:
            await conn.run()
        finally:
            observing.closed(self, conn, trio.current_time() - opened)

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
            wall = time.time()
            for app in self.apps.values():
                app.sweep(wall)
            self.admission.sweep(wall)
            for conn in list(self.connections.values()):
                if not conn.established:
                    continue
                close = conn.session.revalidate(wall)  # e.g. an API key that just expired
                if close is not None:
                    conn.request_close(close.code, close.reason)
                    continue
                silent = now - conn.last_seen
                if silent >= 2 * interval:
                    conn.request_close(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two intervals")
                elif silent >= interval and not conn.pinged:
                    conn.pinged = True
                    self.pending.push(conn.outbox, ping)
            self.flusher.poke()

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _warn_if_exposed(self) -> None:
        exposed = [h for h, _ in self.addresses if not _is_loopback(h)]
        open_apps = [a.name for a in self.config.apps if not a.api_key_required]
        if exposed and open_apps:
            log.warning(
                "SECURITY: serving on %s beyond this machine, and app(s) %s require no API key: "
                "anyone who can reach this port can connect. Configure api_keys, or listen on "
                "127.0.0.1.",
                ", ".join(exposed),
                ", ".join(open_apps),
            )

    # -- reload -------------------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Apply new settings without a restart.

        Apps, API keys, sessions, permissions, rate limits and per-IP limits take effect at once,
        for new and existing connections: a connection its new settings refuse (revoked key,
        disabled or removed app, a session now required) is closed with the matching code.
        The outbound budget applies at once; the other connection limits (message size,
        timeouts, channels) to new connections; listen addresses and TLS need a restart.
        """
        if (config.hosts(), config.port, config.tls_cert, config.tls_key) != (
            self.config.hosts(),
            self.config.port,
            self.config.tls_cert,
            self.config.tls_key,
        ):
            log.warning("reload: listen addresses and TLS changes take effect on restart")
        names = {a.name for a in config.apps}
        for name in [n for n in self.apps if n not in names]:
            del self.apps[name]
        for settings in config.apps:
            if settings.name in self.apps:
                self.apps[settings.name].apply(settings)
            else:
                self.apps[settings.name] = App(
                    settings, self.pending, self._ids, self.broker, self.observer
                )
        self.config = config
        self.admission.apply(config.limits)
        self.flusher.budget = config.limits.outbound_buffer_bytes
        now = time.time()
        closed = 0
        for conn in list(self.connections.values()):
            close = conn.session.revalidate(now) if conn.established else None
            if close is not None:
                conn.request_close(close.code, close.reason)
                closed += 1
        self.flusher.poke()
        log.info(
            "reloaded: %d apps; %d connections closed by the new settings", len(self.apps), closed
        )

    def reload_file(self, path: str | Path) -> None:
        """Load, validate and apply a config file; a bad file raises ConfigError and changes
        nothing."""
        self.reload(load(path))

    # -- the server API: HTTP and in-process share rtcore.api --------------------------------

    async def _serve_api(self, listeners: list[trio.SocketListener]) -> None:
        async def handle(stream: trio.SocketStream) -> None:
            await http.serve_connection(self, stream)

        await trio.serve_listeners(handle, listeners)

    def close_members(self, closing: list[tuple[Member, Close]]) -> None:
        """Close the connections an operation ended (after what it queued for them)."""
        for member, close in closing:
            conn = member.outbox.owner
            if conn is not None:
                conn.request_close(close.code, close.reason)
        self.flusher.poke()

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise UnknownAppError(f"this server hosts no app {name!r}") from None

    def _run(self, outcome: api.Outcome) -> dict[str, Any]:
        self.close_members(outcome.closing)
        return outcome.result

    def send(self, app: str, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to every member of ``channel`` (sender: none, the host app).

        Returns ``{"mid", "ts", "recipients"}``. Raises ``rtcore.api.ApiError`` for an invalid
        channel or event name, and ``UnknownAppError``.
        """
        return self._run(api.send(self.app(app), channel, event, data, time.time()))

    def broadcast(self, app: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to every connection of ``app``."""
        return self._run(api.broadcast(self.app(app), event, data, time.time()))

    def members(self, app: str, channel: str) -> list[dict[str, Any]]:
        """Every member of ``channel`` as ``{"id", "user", "data"}``, in join order."""
        members = self.app(app).table.members(api.valid_channel(channel))
        return [m.info() for m in members.values()]

    def publish_user_event(
        self,
        app: str,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Deliver a user event to ``user``'s connections (docs/api.md); ``signout`` ends
        ``session`` (its connections close with 4016 and its token is refused)."""
        return self._run(
            api.publish_user_event(self.app(app), user, event, session, data, time.time())
        )

    def disconnect_user(self, app: str, user: str) -> dict[str, Any]:
        """Close every connection of ``user`` with 4017."""
        return self._run(api.disconnect_user(self.app(app), user))

    def disconnect_session(self, app: str, session: str, revoke: bool = False) -> dict[str, Any]:
        """Close the session's connections (4017), or with ``revoke`` end it (4016)."""
        return self._run(api.disconnect_session(self.app(app), session, revoke, time.time()))

    def stats(self) -> dict[str, Any]:
        """Server-wide counts, and each app's (as the HTTP stats endpoint gives them)."""
        return {
            "connections": len(self.connections),
            "slow_consumers": self.flusher.slow_consumers,
            "apps": {name: api.stats(a).result for name, a in self.apps.items()},
        }


def _address(listener: trio.SocketListener) -> tuple[str, int]:
    host, port = listener.socket.getsockname()[:2]
    return str(host), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
