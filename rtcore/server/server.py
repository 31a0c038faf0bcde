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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtcore.config.load import load
from rtcore.config.model import AppConfig, Config
from rtcore.core.app import App, MessageIds
from rtcore.core.history import MemoryHistory
from rtcore.core.limits.admission import Admission, within
from rtcore.core.outbox import Pending
from rtcore.engines.base import Broker
from rtcore.engines.memory import MemoryBroker
from rtcore.observe.events import Observer, ServerStatistics
from rtcore.observe.integration_metrics import IntegrationCollector
from rtcore.observe.throttled_log import ThrottledLog
from rtcore.protocol import CloseCode
from rtcore.protocol.close import Close
from rtcore.server import observing, startup
from rtcore.server.accept import (
    accept_forever,
    canned_response,
    close_now,
    peer_ip,
    refuse_now,
    socket_of,
)
from rtcore.server.connection import Connection
from rtcore.server.flusher import Flusher
from rtcore.server.gc_policy import GcFreezer
from rtcore.server.heartbeat import HandshakeDeadlines, Heartbeat
from rtcore.server.http import router
from rtcore.server.ids import ConnectionIds
from rtcore.server.in_process import InProcessAPI, UnknownAppError
from rtcore.server.integrations import Integrations
from rtcore.server.startup import ListenError

if TYPE_CHECKING:
    from rtcore.engines.redis.broker import RedisBroker

log = logging.getLogger("rtcore.server")

SERVER_FULL = canned_response(
    503, "Service Unavailable", "server_full", "the server is at max_connections; retry later"
)
API_BUSY = canned_response(
    503,
    "Service Unavailable",
    "too_many_connections",
    "the server API is at api_max_connections; retry later",
)
__all__ = ["ListenError", "Server", "UnknownAppError"]


DRAIN_REASON = "server shutting down: reconnect to any node"
"""The reason of the 1001 every connection gets on shutdown (protocol.md §7): a client
reconnects at once, anywhere, and recovers what it missed."""


class Server(InProcessAPI):
    """A realtime server hosting one or more apps.

    Args:
        config: settings; the embedded defaults when omitted.
        flush_window: the longest a flush pass waits to batch more writes under load.
        wall: the wall clock (Unix seconds) for timestamps, token and API key expiry; tests
            pass one that follows trio's clock. Timers and local expiry use trio's clock.
        metrics: Prometheus metrics (``GET /metrics`` on the server-API port); by default on
            when the server API is.
        observer: told of connections, refusals and flush passes too (rtcore.observe).
        reuse_port: listen with SO_REUSEPORT (Linux), sharing the client and server-API ports
            with other processes that do the same: the workers of ``rtcore serve --workers``.
        gc_freeze: keep the garbage collector's pauses short by freezing, every second, what
            survived a collection (rtcore.server.gc_policy; ``rtcore serve`` turns it on). It
            changes the whole process's collector: an embedding application whose own objects
            die in reference cycles keeps them until the frozen heap doubled.
    """

    redis: RedisBroker | None
    """The Redis broker when ``[broker] kind = "redis"`` (also ``broker``)."""
    api_connections: int
    """Open server-API connections (capped at limits.api_max_connections)."""
    api_addresses: list[tuple[str, int]]
    """Where the server API (HTTP) listens; empty when it is off."""
    config_path: Path | None
    """The file the settings came from, if any: reloads and the settings page use it."""
    config_overrides: dict[str, Any]
    """Settings given on the command line, which win over the file's on every reload."""
    on_settings_saved: Callable[[], None] | None
    """Called after the settings page saved the config file and applied it here (a
    worker then has its supervisor reload the other workers: rtcore.workers)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        flush_window: float = 0.002,
        wall: Callable[[], float] = time.time,
        metrics: bool | None = None,
        observer: Observer | None = None,
        reuse_port: bool = False,
        gc_freeze: bool = False,
    ) -> None:
        self.config = config = config or Config()
        self.reuse_port, self.gc_freeze, self.wall = reuse_port, gc_freeze, wall
        self.statistics = ServerStatistics()
        metrics = config.api_port is not None if metrics is None else metrics
        self.observer, self.log_observer, self.metrics = observing.setup(self, metrics, observer)
        self.node = secrets.token_hex(4)
        self._conn_ids = ConnectionIds()
        self.pending = Pending()
        self._ids = MessageIds(self.node)
        budget = config.limits.outbound_buffer_bytes
        self.flusher = Flusher(self.pending, budget, flush_window, self.observer)
        self.broker: Broker = self._broker()
        self.apps: dict[str, App] = {a.name: self._new_app(a) for a in config.apps}
        self.integrations = self._integrations()
        self.admission = Admission(config.limits, startup.open_files())
        self.api_connections = 0
        self._refusals = ThrottledLog(log)
        self.connections: dict[str, Connection] = {}
        self._heartbeat = Heartbeat(
            self.connections, self.pending, self.flusher, self._sweep, lambda: self.wall()
        )
        self._stop, self._idle = trio.Event(), trio.Event()
        self._handshakes = HandshakeDeadlines(lambda: self.config.limits.handshake_timeout)
        self._idle.set()
        self.addresses: list[tuple[str, int]] = []
        self.api_addresses = []
        self.config_path = None
        self.config_overrides = {}
        self.on_settings_saved = None

    def _integrations(self) -> Integrations:
        """The apps' hooks and webhooks (docs/hooks.md), and their metrics."""
        integrations = Integrations(self.node, lambda: self.wall())
        integrations.apply(self.apps)
        if self.metrics is not None:
            collector = IntegrationCollector(integrations, trio.current_time)
            self.metrics.registry.register(collector)
        return integrations

    def _new_app(self, settings: AppConfig) -> App:
        return App(settings, self.pending, self._ids, self.broker, self.observer)

    def _broker(self) -> Broker:
        """``[broker]``: in process, or Redis (imported only then)."""
        limits = self.config.limits
        self.redis = None
        if self.config.broker.kind == "memory":
            return MemoryBroker(MemoryHistory(limits.max_history_bytes, limits.history_meta_ttl))
        from rtcore.engines.redis.broker import RedisBroker

        self.redis = RedisBroker(
            self.config.broker,
            self.node,
            close_members=self.close_members,
            poke=self.flusher.poke,
            clock=lambda: (trio.current_time(), self.wall()),
            meta_ttl=limits.history_meta_ttl,
        )
        return self.redis

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; reports the bound addresses when ready.

        Raises:
            ListenError: a port could not be bound (both are bound before anything starts,
                so this is one plain exception with ``rtcore serve``'s one-line message).
        """
        listeners: list[Any] = []
        for host in self.config.hosts():
            listeners += await startup.open_listeners(
                self.config.port, host, "WebSocket", self.reuse_port
            )
        api_listeners = await self._open_api_listeners(listeners)
        self.addresses = [startup.address(lst) for lst in listeners]
        tls = startup.tls_context(self.config)
        if tls is not None:
            listeners = [trio.SSLListener(lst, tls, https_compatible=True) for lst in listeners]
        self._warn_if_exposed()
        startup.log_capacity(self.config, self.admission)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            await nursery.start(self.integrations.run)
            if self.redis is not None:
                await nursery.start(self.redis.run)
            nursery.start_soon(self._heartbeat.run, self.config.limits.heartbeat_interval)
            nursery.start_soon(self._handshakes.run)
            if self.gc_freeze:  # after start-up: what it made is frozen at once
                await nursery.start(GcFreezer().run)
            if api_listeners:
                self._start_api(nursery, api_listeners)
            await self._serve_clients(listeners, nursery, task_status)
            nursery.cancel_scope.cancel()
        observing.stopped(self.log_observer, self.statistics)

    async def _serve_clients(
        self, listeners: list[Any], nursery: trio.Nursery, task_status: Any
    ) -> None:
        """Accept on the client port until :meth:`shutdown`, then close every connection."""
        async with trio.open_nursery() as conn_nursery:
            accept_scope = trio.CancelScope()

            async def accept(listener: trio.abc.Listener[Any]) -> None:
                with accept_scope:
                    await accept_forever(
                        listener,
                        lambda stream: self._accepted(stream, conn_nursery),
                        "client port",
                    )

            for listener in listeners:
                nursery.start_soon(accept, listener)
            log.info("rtcore serving on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
            startup.log_pages(
                self.addresses,
                self.api_addresses,
                self.config.tls_cert is not None,
                self.config.admin_secret is not None,
            )
            task_status.started(self.addresses)
            await self._stop.wait()
            accept_scope.cancel()
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            await self._close_all()
            if self.redis is not None:
                with trio.move_on_after(self.config.limits.close_timeout):
                    await self.redis.drain()  # the leaves of the closed connections
            conn_nursery.cancel_scope.cancel()

    async def _open_api_listeners(self, opened: list[Any]) -> list[trio.SocketListener]:
        """The server API's listeners (none with ``api_port = false``); on failure the client
        port's ``opened`` listeners are closed before ListenError goes on."""
        if self.config.api_port is None:
            return []
        try:
            return await startup.open_listeners(
                self.config.api_port, self.config.api_host, "server API", self.reuse_port
            )
        except startup.ListenError:
            for listener in opened:
                await trio.aclose_forcefully(listener)
            raise

    def _start_api(self, nursery: trio.Nursery, api_listeners: list[trio.SocketListener]) -> None:
        self.api_addresses = [startup.address(lst) for lst in api_listeners]
        nursery.start_soon(self._serve_api, api_listeners)
        log.info("server API on %s", ", ".join(f"http://{h}:{p}" for h, p in self.api_addresses))

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001 and let :meth:`serve` return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """:meth:`shutdown` was called."""
        return self._stop.is_set()

    async def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.request_close(CloseCode.GOING_AWAY, DRAIN_REASON)
        self.flusher.poke()
        with trio.move_on_after(self.config.limits.shutdown_grace):
            await self._idle.wait()
        if self.connections:
            log.warning(
                "%d connections did not close within the grace period", len(self.connections)
            )

    def _accepted(self, stream: Any, nursery: trio.Nursery) -> None:
        """Count a new client connection from its first byte, or refuse it at once.

        Over ``max_connections``: HTTP 503, closed. Over a per-IP limit: told why with a
        minimal upgrade and 4020/4029 (a few at a time per IP; the rest are closed at once).
        Behind a trusted proxy the per-IP check waits for the upgrade's X-Forwarded-For.
        """
        sock = socket_of(stream)
        tls = stream if isinstance(stream, trio.SSLStream) else None
        if self._stop.is_set():
            close_now(stream)
            return
        now = trio.current_time()
        if not self.admission.accept():
            self._refusals.warning(
                now, "refusing connections: %d open (max_connections)", self.admission.open
            )
            refuse_now(stream, SERVER_FULL)
            return
        peer = peer_ip(sock)
        ip: str | None = None
        refusal: Close | None = None
        if not within(peer, self.config.trusted_proxies):
            refusal = self.admission.admit(peer, now)
            if refusal is None:
                ip = peer
            elif not self.admission.explain(peer):
                self.admission.ended()
                self._refusals.warning(
                    now, "refusing connections from %s: %s", peer, refusal.reason
                )
                close_now(stream)
                return
        conn = self._connection(sock, tls, peer, ip, refusal)
        if conn is not None:  # its task is conn.run itself (which reports its close): no
            nursery.start_soon(conn.run)  # wrapper coroutine kept alive per idle connection

    def _connection(
        self,
        sock: trio.socket.SocketType,
        tls: trio.SSLStream[Any] | None,
        peer: str,
        ip: str | None,
        refusal: Close | None,
    ) -> Connection | None:
        """Set up and register a connection's object (None if that failed: closed)."""
        try:
            conn_id = self._conn_ids.new()
            while conn_id in self.connections:  # pragma: no cover - 72 random bits
                conn_id = self._conn_ids.new()
            conn = Connection(self, sock, conn_id, tls, peer=peer, counted_ip=ip, refusal=refusal)
        except Exception:
            log.exception("cannot set up a connection from %s", peer)
            self.release_admission(peer, ip, refusal)
            sock.close()
            return None
        self.connections[conn_id] = conn
        if refusal is None:  # (a refused one has close_timeout to be told why)
            self._handshakes.add(conn)
        self.statistics.accepted += 1
        if self._idle.is_set():  # no longer idle
            self._idle = trio.Event()
        return conn

    def release_admission(self, peer: str, ip: str | None, refusal: Close | None) -> None:
        """Undo what :meth:`_accepted` counted for a connection that ended."""
        if ip is not None:
            self.admission.release(ip)
        if refusal is not None:
            self.admission.explained(peer)
        self.admission.ended()

    def handshaken(self, conn: Connection) -> None:
        """``conn`` said a valid hello: its handshake deadline is gone."""
        self._handshakes.done(conn)

    def forget(self, conn: Connection) -> None:
        self._handshakes.done(conn)
        self.connections.pop(conn.id, None)
        if not self.connections:
            self._idle.set()

    def _sweep(self, now: float, wall: float) -> None:
        """Expire what the heartbeat's pass finds expired, besides connections."""
        for app in self.apps.values():
            app.sweep(now)
        self.broker.history.sweep(wall)
        self.admission.sweep(now)

    def _warn_if_exposed(self) -> None:
        startup.warn_if_exposed(self.config, self.addresses)

    # -- reload -------------------------------------------------------------------------------

    def reload(self, config: Config) -> int:
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
        self._apply_apps(config.apps)
        self.integrations.apply(self.apps)
        self.config = config
        self.admission.apply(config.limits)
        self.flusher.budget = config.limits.outbound_buffer_bytes
        closed = self._revalidate()
        self.flusher.poke()
        log.info(
            "reloaded: %d apps; %d connections closed by the new settings", len(self.apps), closed
        )
        return closed

    def _apply_apps(self, apps: tuple[AppConfig, ...]) -> None:
        """Remove, update and add apps (in place: connections hold the dict)."""
        names = {a.name for a in apps}
        for name in [n for n in self.apps if n not in names]:
            del self.apps[name]
        for settings in apps:
            if settings.name in self.apps:
                self.apps[settings.name].apply(settings)
            else:
                self.apps[settings.name] = self._new_app(settings)

    def _revalidate(self) -> int:
        """Close the connections the current settings refuse; returns how many."""
        wall = self.wall()
        closed = 0
        for conn in list(self.connections.values()):
            close = conn.session.revalidate(wall) if conn.established else None
            if close is not None:
                conn.request_close(close.code, close.reason)
                closed += 1
        return closed

    def reload_file(self, path: str | Path) -> int:
        """Load, validate and apply a config file (with :attr:`config_overrides`); a bad file
        raises ConfigError and changes nothing. Returns the connections the new settings closed."""
        return self.reload(attrs.evolve(load(path), **self.config_overrides))

    # -- the server-API port (rtcore.server.http; the in-process API: rtcore.server.in_process)

    async def _serve_api(self, listeners: list[trio.SocketListener]) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(
                    accept_forever,
                    listener,
                    lambda stream: self._api_accepted(stream, nursery),
                    "server API port",
                )

    def _api_accepted(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        if self.api_connections >= self.config.limits.api_max_connections:
            self._refusals.warning(
                trio.current_time(),
                "refusing server-API connections: %d open (api_max_connections)",
                self.api_connections,
            )
            refuse_now(stream, API_BUSY)
            return
        self.api_connections += 1
        nursery.start_soon(self._api_connection, stream)

    async def _api_connection(self, stream: trio.SocketStream) -> None:
        try:
            await router.serve_connection(self, stream)
        finally:
            self.api_connections -= 1
