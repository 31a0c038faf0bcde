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
import resource
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtcore import operations as api
from rtcore.config.load import load
from rtcore.config.model import Config
from rtcore.core.app import App, MessageIds
from rtcore.core.history import MemoryHistory
from rtcore.core.limits.admission import Admission, within
from rtcore.core.members import Member
from rtcore.core.outbox import Pending
from rtcore.engines.base import Broker, BrokerUnavailable
from rtcore.engines.memory import MemoryBroker
from rtcore.observe.events import Observer, ServerStatistics
from rtcore.observe.throttled_log import ThrottledLog
from rtcore.protocol import CloseCode, ErrorCode, RtcoreError, wsframe
from rtcore.protocol.close import Close
from rtcore.protocol.position import Position
from rtcore.server import http, listen, observing
from rtcore.server.accept import (
    accept_forever,
    canned_response,
    close_now,
    refuse_now,
    socket_of,
)
from rtcore.server.connection import Connection, peer_ip
from rtcore.server.flusher import Flusher
from rtcore.server.ids import ConnectionIds

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
HEARTBEAT_CHECKPOINT_EVERY = 1000
"""Connections the heartbeat revalidates between two yields to other tasks."""


class UnknownAppError(RtcoreError, LookupError):
    """The host app named an app this server does not host."""


class ListenError(RtcoreError, OSError):
    """An address to listen on could not be bound; the message names it and why."""


DRAIN_REASON = "server shutting down: reconnect to any node"
"""The reason of the 1001 every connection gets on shutdown (protocol.md §7): a client
reconnects at once, anywhere, and recovers what it missed."""


class Server:
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
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        flush_window: float = 0.002,
        wall: Callable[[], float] = time.time,
        metrics: bool | None = None,
        observer: Observer | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config or Config()
        self.reuse_port = reuse_port
        self.wall = wall
        self.statistics = ServerStatistics()
        self.observer, self.log_observer, self.metrics = observing.setup(self, metrics, observer)
        self.node = secrets.token_hex(4)
        self._conn_ids = ConnectionIds()
        self.pending = Pending()
        ids = MessageIds(self.node)
        self.flusher = Flusher(
            self.pending, self.config.limits.outbound_buffer_bytes, flush_window, self.observer
        )
        self.redis: RedisBroker | None = None
        """The Redis broker when ``[broker] kind = "redis"`` (also ``broker``)."""
        self.broker: Broker = self._broker()
        self.apps: dict[str, App] = {
            a.name: App(a, self.pending, ids, self.broker, self.observer) for a in self.config.apps
        }
        self.admission = Admission(self.config.limits, _open_files())
        self.api_connections = 0
        """Open server-API connections (capped at limits.api_max_connections)."""
        self._refusals = ThrottledLog(log)
        self._ids = ids
        self.connections: dict[str, Connection] = {}
        self._stop = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.addresses: list[tuple[str, int]] = []
        self.api_addresses: list[tuple[str, int]] = []
        """Where the server API (HTTP) listens; empty when it is off."""
        self.config_path: Path | None = None
        """The file the settings came from, if any: reloads and the settings page use it."""
        self.config_overrides: dict[str, Any] = {}
        """Settings given on the command line, which win over the file's on every reload."""
        self.on_settings_saved: Callable[[], None] | None = None
        """Called after the settings page saved the config file and applied it here (a
        worker then has its supervisor reload the other workers: rtcore.workers)."""

    def _broker(self) -> Broker:
        """``[broker]``: in process, or Redis (imported only then)."""
        limits = self.config.limits
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
        """Listen and serve until :meth:`shutdown`; reports the bound addresses when ready."""
        listeners: list[Any] = []
        for host in self.config.hosts():
            listeners += await _open_listeners(self.config.port, host, "WebSocket", self.reuse_port)
        self.addresses = [_address(lst) for lst in listeners]
        tls = self._tls_context()
        if tls is not None:
            listeners = [trio.SSLListener(lst, tls, https_compatible=True) for lst in listeners]
        self._warn_if_exposed()
        self._log_capacity()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            if self.redis is not None:
                await nursery.start(self.redis.run)
            nursery.start_soon(self._heartbeat)
            if self.config.api_port is not None:
                api_listeners = await _open_listeners(
                    self.config.api_port, self.config.api_host, "server API", self.reuse_port
                )
                self.api_addresses = [_address(lst) for lst in api_listeners]
                nursery.start_soon(self._serve_api, api_listeners)
                log.info(
                    "server API on %s", ", ".join(f"http://{h}:{p}" for h, p in self.api_addresses)
                )
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

    def forget(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if not self.connections:
            self._idle.set()

    async def _heartbeat(self) -> None:
        """One task for all connections: ping the silent, close the dead (protocol.md §3.3).

        It never dies: a failure while checking one connection closes that connection (1011,
        logged once); a failure elsewhere in a pass is logged and the next pass comes anyway.
        """
        interval = self.config.limits.heartbeat_interval
        while True:
            await trio.sleep(interval / 2)
            try:
                await self._heartbeat_pass(interval)
            except Exception:
                log.exception("heartbeat pass failed")
            self.flusher.poke()

    async def _heartbeat_pass(self, interval: float) -> None:
        now = trio.current_time()
        wall = self.wall()
        for app in self.apps.values():
            app.sweep(now)
        self.broker.history.sweep(wall)
        self.admission.sweep(now)
        for i, conn in enumerate(list(self.connections.values())):
            if i % HEARTBEAT_CHECKPOINT_EVERY == HEARTBEAT_CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # other tasks run during a long pass
            if not conn.established:
                continue
            try:
                self._heartbeat_one(conn, now, wall, interval)
            except Exception:
                log.exception("heartbeat: connection %s (%s) failed", conn.id, conn.remote)
                conn.request_close(CloseCode.INTERNAL_ERROR, "internal error (logged)")

    def _heartbeat_one(self, conn: Connection, now: float, wall: float, interval: float) -> None:
        close = conn.session.revalidate(wall)  # e.g. an API key that just expired
        if close is not None:
            conn.request_close(close.code, close.reason)
            return
        silent = now - conn.last_seen
        if silent >= 2 * interval:
            conn.request_close(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two intervals")
        elif silent >= interval and not conn.pinged:
            conn.pinged = True
            self.pending.push(conn.outbox, PING)

    def _log_capacity(self) -> None:
        limits = self.config.limits
        log.info(
            "connection caps: %d client connections (max_connections%s), %d server-API",
            self.admission.cap,
            "" if limits.max_connections is not None else " derived from the open-files limit",
            limits.api_max_connections,
        )
        needed = self.admission.cap + limits.api_max_connections
        if limits.max_connections is not None and needed > _open_files():
            log.warning(
                "max_connections (%d) + api_max_connections (%d) exceed the open-files limit "
                "(%d): raise `ulimit -n` or lower them",
                self.admission.cap,
                limits.api_max_connections,
                _open_files(),
            )

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
        wall = self.wall()
        closed = 0
        for conn in list(self.connections.values()):
            close = conn.session.revalidate(wall) if conn.established else None
            if close is not None:
                conn.request_close(close.code, close.reason)
                closed += 1
        self.flusher.poke()
        log.info(
            "reloaded: %d apps; %d connections closed by the new settings", len(self.apps), closed
        )
        return closed

    def reload_file(self, path: str | Path) -> int:
        """Load, validate and apply a config file (with :attr:`config_overrides`); a bad file
        raises ConfigError and changes nothing. Returns the connections the new settings closed."""
        return self.reload(attrs.evolve(load(path), **self.config_overrides))

    # -- the server API: HTTP and in-process share rtcore.operations -------------------------

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
            await http.serve_connection(self, stream)
        finally:
            self.api_connections -= 1

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

        Returns ``{"mid", "ts", "recipients"}``. Raises ``rtcore.operations.ApiError`` for an
        invalid channel or event name, and ``UnknownAppError``.
        """
        return self._run(api.send(self.app(app), channel, event, data, self.wall()))

    def broadcast(self, app: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to every connection of ``app``."""
        return self._run(api.broadcast(self.app(app), event, data, self.wall()))

    def history(
        self,
        app: str,
        channel: str,
        since: Position | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """A page of ``channel``'s history, as the server API's (docs/api.md): ``{"messages",
        "epoch", "offset", "next"}``; pass ``next`` back as ``since`` (a
        :class:`~rtcore.protocol.position.Position`) for the next page. Raises
        ``rtcore.operations.ApiError``
        (``history_unavailable``, ``unrecoverable_position``, ...), and ``UnknownAppError``."""
        limits = self.config.limits
        the_app = self.app(app)
        if the_app.broker.shared:
            raise api.ApiError(
                400,
                ErrorCode.BAD_REQUEST.value,
                "with the Redis broker history is read asynchronously: await read_history()",
            )
        outcome = api.history(the_app, channel, since, limit, reverse, self.wall(), limits)
        return outcome.result

    async def read_history(
        self,
        app: str | App,
        channel: str,
        since: Position | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> api.Outcome:
        """A page of ``channel``'s history from wherever the broker keeps it (with Redis:
        the cluster's stream, bounded by ``[broker] command_timeout``; 503
        ``broker_unavailable`` beyond). :meth:`history` is the same for the memory broker."""
        the_app = self.app(app) if isinstance(app, str) else app
        limits = self.config.limits
        retention, limit = api.history_request(the_app, channel, limit, limits)
        if not the_app.broker.shared:
            found = the_app.history(channel, since, limit + 1, reverse, self.wall())
            return api.history_page(found, since, reverse, limit, limits)
        timeout = self.config.broker.command_timeout
        with trio.move_on_after(timeout):
            try:
                found = await the_app.broker.read_history(
                    the_app.name, channel, since, limit + 1, reverse, retention
                )
            except BrokerUnavailable as exc:
                raise api.ApiError(503, ErrorCode.BROKER_UNAVAILABLE.value, str(exc)) from None
            return api.history_page(found, since, reverse, limit, limits)
        raise api.ApiError(
            503,
            ErrorCode.BROKER_UNAVAILABLE.value,
            f"the broker did not answer within {timeout:g} s",
        )

    def members(self, app: str, channel: str) -> list[dict[str, Any]]:
        """Every member of ``channel`` on this node as ``{"id", "user", "data"}``, in join
        order (whatever the channel's ``presence`` rule: the host app is trusted). With the
        Redis broker, :meth:`list_members` lists the whole cluster's."""
        members = self.app(app).table.members(api.valid_channel(channel))
        return [m.info() for m in members.values()]

    async def list_members(
        self, app: str, channel: str, after: int | None = None, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of ``channel``'s members (the cluster's, with the Redis broker) and the
        cursor of the next page (None on the last). Raises ``rtcore.operations.ApiError``: 400/422
        for a bad limit or channel, 503 ``broker_unavailable`` when Redis cannot answer."""
        the_app = self.app(app)
        limit = api.members_limit(channel, limit, self.config.limits.max_members_page)
        if not the_app.broker.shared:
            page, cursor = the_app.table.page(channel, after, limit)
            return [m.info() for m in page], cursor
        return await self.cluster_members(the_app, channel, after, limit)

    async def cluster_members(
        self, app: App, channel: str, after: int | None, limit: int
    ) -> tuple[list[Any], int | None]:
        """The broker's listing, bounded by ``[broker] command_timeout`` (503 beyond)."""
        timeout = self.config.broker.command_timeout
        with trio.move_on_after(timeout):
            try:
                return await app.broker.members(app.name, channel, after, limit)
            except BrokerUnavailable as exc:
                raise api.ApiError(503, ErrorCode.BROKER_UNAVAILABLE.value, str(exc)) from None
        raise api.ApiError(
            503,
            ErrorCode.BROKER_UNAVAILABLE.value,
            f"the broker did not answer within {timeout:g} s",
        )

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
            api.publish_user_event(
                self.app(app), user, event, session, data, trio.current_time(), self.wall()
            )
        )

    def disconnect_user(self, app: str, user: str) -> dict[str, Any]:
        """Close every connection of ``user`` with 4017."""
        return self._run(api.disconnect_user(self.app(app), user))

    def disconnect_session(
        self, app: str, user: str, session: str, revoke: bool = False
    ) -> dict[str, Any]:
        """Close the connections of ``user``'s ``session`` (4017), or with ``revoke`` end it
        (4016)."""
        return self._run(
            api.disconnect_session(
                self.app(app), user, session, revoke, trio.current_time(), self.wall()
            )
        )

    async def largest_channels(self, app: App, top: int) -> api.Sizes:
        """``api.largest`` over the app's channels, yielding to other tasks every
        :data:`STATS_SLICE` channels (a server with 100k channels answers the stats endpoint
        and the settings page without holding up its connections)."""
        groups = list(app.table.channels().items())
        best: api.Sizes = []
        for start in range(0, len(groups), STATS_SLICE):
            best = api.largest(best, groups[start : start + STATS_SLICE], top)
            await trio.lowlevel.checkpoint()
        return best

    def stats(self) -> dict[str, Any]:
        """Server-wide counts, and each app's (as the HTTP stats endpoint gives them)."""
        return {
            "connections": len(self.connections),
            "slow_consumers": self.flusher.slow_consumers,
            "apps": {name: api.stats(a).result for name, a in self.apps.items()},
        }


async def _open_listeners(
    port: int, host: str, what: str, reuse_port: bool
) -> list[trio.SocketListener]:
    """The listeners (rtcore.server.listen), with a failure to bind translated once into
    ListenError."""
    try:
        return await listen.open_listeners(port, host, reuse_port=reuse_port)
    except OSError as exc:
        raise ListenError(exc.errno, listen.failure_reason(exc, host, port, what)) from exc


PING = wsframe.ping_frame()
STATS_SLICE = 1000
"""Channels ranked between two checkpoints by :meth:`Server.largest_channels`."""


def _open_files() -> int:
    """The process's soft open-files limit (RLIMIT_NOFILE); unlimited counts as 2**20."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**20


def _address(listener: trio.SocketListener) -> tuple[str, int]:
    host, port = listener.socket.getsockname()[:2]
    return str(host), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
