"""One WebSocket connection: handshake, reader, on-demand drain, close (trio).

Theory of operation:

* The connection's task runs its nursery: the reader is the task itself; a drain task is
  started only when the socket refuses bytes (its send buffer is full). Idle connections hold
  no task besides the reader and no timer: the server's heartbeat task covers them all.
* Outbound bytes never go through wsproto: they are queued, already framed, on the session's
  outbox, and written by the server's flusher (one non-blocking write of everything pending,
  per flush round) or, while the socket is full, by the drain task. ``outbox.items[0]`` may be
  the unwritten tail of a partly written frame, so the queue stays a valid byte stream if any
  writer is cancelled.
* The reader hands each complete binary message to the sans-IO session and never waits on
  fan-out, so pings are answered however busy the app is.
* The reader handles at most :data:`EVENTS_PER_BATCH` frames before it yields to other tasks,
  however many one read brought, and charges every frame and byte to the connection's
  inbound budget (a flood of pings or empty fragments ends with 4031).
* The connection was counted by admission when it was accepted (before its upgrade); a
  connection admission refused is only told why: upgrade, then the close code.
* Every way out -- peer close, EOF, protocol error, slow consumer, heartbeat, shutdown, a bug --
  passes through ``run``'s ``finally``: the session leaves its channels and the socket closes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from rtcore.config.model import Config
from rtcore.core.app import App
from rtcore.core.limits.admission import Admission, InboundBudget, client_address
from rtcore.core.outbox import Pending
from rtcore.core.session.session import Session
from rtcore.engines.base import BrokerUnavailable
from rtcore.observe.events import ABNORMAL_CLOSE, NO_CLOSE, Connected
from rtcore.protocol import CloseCode
from rtcore.protocol.assembly import MessageAssembler, MessageTooBig, assemble
from rtcore.protocol.close import Close
from rtcore.server import gc_policy, handshake, observing, upgrade
from rtcore.server.accept import peer_ip
from rtcore.server.flusher import Flusher
from rtcore.server.transport import Transport

log = logging.getLogger("rtcore.connection")

EVENTS_PER_BATCH = 512
"""Frames handled from the read buffer before the reader lets other tasks run. A publisher's
burst is fanned out a batch at a time, and each flush pass writes every subscriber what the
batches since the last pass queued: 512 (128 before) lets a pass carry ~4 times the
deliveries per ``write``, which made the burst at 1,000 subscribers ~25% faster (43% of the
raw ceiling; bench/RESULTS.md). The price is fairness: a connection may hold the reader for
512 frames (~16 ms when each fans out to 1,000 members) before others run; its inbound budget
bounds how often."""


HOOK_MARGIN = 1.0
"""Seconds past a hook's timeout that its deferred request is given up by the connection
(the hook client ends the call at its timeout: this only bounds a bug)."""


class Host(observing.Reported, Protocol):
    """What a connection needs of the server (a Protocol: the Server is one). Read through
    ``self.server`` as before; the reader binds nothing more per frame than it did."""

    @property
    def config(self) -> Config: ...

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def pending(self) -> Pending: ...

    @property
    def flusher(self) -> Flusher: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def wall(self) -> Callable[[], float]: ...

    def handshaken(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...

    def release_admission(self, peer: str, ip: str | None, refusal: Close | None) -> None: ...


class Connection(Transport):
    """One client's WebSocket connection, on its socket (the Transport).

    Slotted, and holding nothing it does not need once established (the upgrade's HTTP
    state is dropped), because idle connections are what a server has most of.
    """

    __slots__ = (
        "server",
        "session",
        "opened",
        "counted_ip",
        "peer",
        "refusal",
        "budget",
        "failed",
        "_ws",
        "_close",
        "_abort",
        "_discard",
        "_nursery",
        "_assembly",
        "_left",
    )

    # The fields that need saying (the slots are not class attributes: these are annotations).
    peer: str
    """The TCP peer's address (before X-Forwarded-For is applied)."""
    counted_ip: str | None
    """The address admission counted this connection under; None: not yet (behind a
    trusted proxy, until the upgrade names the client)."""
    refusal: Close | None
    """Admission refused the connection at accept: upgrade only to close with this."""
    opened: float
    """When the connection was set up (trio's clock): its duration is reported at close."""
    failed: bool
    """Writing to it failed once (a bug, logged); it is closing with 1011."""
    _ws: Any
    """wsproto's frame-level connection once the upgrade is accepted (None until then)."""
    _abort: bool
    """End without a closing handshake (the peer is gone, or never upgraded)."""

    def __init__(
        self,
        server: Host,
        sock: trio.socket.SocketType,
        conn_id: str,
        tls: trio.SSLStream[Any] | None = None,
        *,
        peer: str | None = None,
        counted_ip: str | None = None,
        refusal: Close | None = None,
    ) -> None:
        super().__init__(sock, conn_id, tls)
        self.server = server
        self.peer = peer_ip(sock) if peer is None else peer
        self.counted_ip = counted_ip
        self.refusal = refusal
        self.session = Session(
            conn_id, server.apps, server.config, server.pending, owner=self, remote=self.peer
        )
        self.outbox = self.session.outbox
        self.opened = self.last_seen
        self.budget = InboundBudget(server.config.limits, self.last_seen)
        self.failed = False
        self._ws: Any = None
        self._close: Close | None = None
        self._abort = False
        self._discard = False
        self._nursery: trio.Nursery | None = None
        self._assembly: MessageAssembler | None = None
        """The message coming in fragments, if one is (see ``assembly.assemble``)."""
        self._left = False

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; never raises (except Cancelled)."""
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        await self._serve()
                        if self._close is None and not self._abort:  # established: read
                            # (awaited here rather than inside _serve: one coroutine less
                            # per idle connection)
                            self._observe_established()
                            await self._read(until_hello=False)
                    finally:
                        # No drain task may start from here on: once its last child is done
                        # the nursery closes, possibly before this task resumes, and the
                        # flusher's start_soon would then fail ("closed to new arrivals").
                        self._nursery = None
            except Exception:
                # A bug of ours, confined to this connection: say so to the peer with 1011.
                log.exception("connection %s (%s) failed", self.id, self.remote)
                self._close = Close(CloseCode.INTERNAL_ERROR, "internal error (logged)")
                self._discard = True
            if not self._abort:
                await self._finish()
        except Exception:
            log.exception("connection %s (%s) failed while closing", self.id, self.remote)
        finally:
            try:
                await self._cleanup()
            finally:  # reported here, not by a wrapper task (one coroutine less per connection)
                observing.closed(self.server, self, trio.current_time() - self.opened)

    async def _cleanup(self) -> None:
        """Forget the connection everywhere and close the socket, whatever fails on the way."""
        try:
            self._leave_channels()
        finally:
            self.server.flusher.poke()
            self.outbox.closed = True
            self.outbox.items.clear()
            self.server.forget(self)
            self.server.release_admission(self.peer, self.counted_ip, self.refusal)
            if self.tls is not None:
                await trio.aclose_forcefully(self.tls)
            self.sock.close()
            gc_policy.break_cycles(self.outbox, self._ws)

    async def _serve(self) -> None:
        """Upgrade and hello; ``run`` then reads until a close is decided (or requested: then
        cancelled). The handshake timeout is the server's (rtcore.server.heartbeat's
        HandshakeDeadlines): no cancel scope per connection."""
        if self.refusal is not None:  # only say why: a minimal upgrade, then the close code
            with trio.move_on_after(self.server.config.limits.close_timeout):
                if await self._upgrade():
                    self._close = self.refusal
                    return
            self._abort = True
            return
        if self._close is not None:  # (timed out before the task ran)
            return
        if not await self._upgrade():
            self._abort = True
            return
        if self.counted_ip is None:  # behind a trusted proxy: now the client is known
            self._close = self.server.admission.admit(self.remote, trio.current_time())
            if self._close is not None:
                return
            self.counted_ip = self.remote
        await self._read(until_hello=True)

    def _observe_established(self) -> None:
        app, principal = self.session.app, self.session.principal
        self.server.handshaken(self)
        if app is not None:
            user = principal.user if principal else None
            self.server.observer.connected(Connected(self.id, self.remote, app.name, user))

    def request_close(self, code: int, reason: str, *, discard_pending: bool = False) -> None:
        """Ask the connection to close (from the flusher, heartbeat or shutdown).

        Cancels the connection's nursery (its reader and any drain task); ``run`` then
        performs the closing handshake.
        """
        if self._close is None:
            self._close = Close(code, reason)
            self._discard = discard_pending
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @property
    def established(self) -> bool:
        """A valid hello was received and the connection is not closing yet."""
        return self.session.established

    @property
    def close_code(self) -> tuple[int, str]:
        """How it ended (or is ending): the close code and reason (rtcore.observe's NO_CLOSE
        without a WebSocket, ABNORMAL_CLOSE when the peer vanished without a close frame)."""
        if self._close is None:
            return NO_CLOSE, "no WebSocket"
        if self._abort:
            return ABNORMAL_CLOSE, self._close.reason
        return self._close.code, self._close.reason

    @property
    def closing(self) -> bool:
        """A close was decided or requested."""
        return self._close is not None

    @property
    def remote(self) -> str:
        """The peer's IP address."""
        return self.session.remote

    # -- handshake ----------------------------------------------------------------------------

    async def _upgrade(self) -> bool:
        """The HTTP upgrade; returns False if it was refused or the peer went away."""
        received = b""  # (bounded: upgrade.MAX_HEAD)
        while True:
            data = await self._receive()
            if not data:
                return False
            searched = max(0, len(received) - 3)
            received += data
            end = upgrade.head_end(received, searched)
            try:
                if end < 0:
                    if len(received) > upgrade.MAX_HEAD:
                        raise upgrade.TOO_LARGE
                    continue
                key, headers = upgrade.parse(received[:end])
            except upgrade.Refused as refused:
                # not an upgrade: a file? (only within the per-IP connection limits)
                reply = handshake.refusal(refused, received, self._admit_plain)
                with trio.move_on_after(1):
                    await self._write_through(reply)
                return False
            return await self._accept(key, headers, received[end:])

    def _admit_plain(self, forwarded: list[str]) -> str | None:
        """Whether a plain HTTP request (a static file) may be answered: the per-IP limits
        refused this connection at accept, or, behind a trusted proxy, refuse the address
        X-Forwarded-For names now (then it is counted like a WebSocket's). None: it may."""
        if self.refusal is not None:
            return self.refusal.reason
        if self.counted_ip is not None:
            return None
        ip = client_address(self.peer, forwarded, self.server.config.trusted_proxies)
        close = self.server.admission.admit(ip, trio.current_time())
        if close is not None:
            return close.reason
        self.counted_ip = self.session.remote = ip
        return None

    async def _accept(self, key: bytes, headers: upgrade.Headers, trailing: bytes) -> bool:
        """Answer the upgrade request: 101, or 403 for an origin not allowed (False)."""
        config = self.server.config
        session = self.session
        session.remote = handshake.client_of(headers, session.remote, config.trusted_proxies)
        session.origin = handshake.origin_of(headers)
        session.handshake = headers  # for a connect hook, until hello
        if not handshake.origin_allowed(headers, config.allowed_origins):
            await self._write_through(upgrade.FORBIDDEN.response())
            return False
        accept = upgrade.switching_protocols(key)
        self._ws = handshake.frame_connection(trailing)
        if trailing:
            # The hello came with the request: the 101 is queued, and the flusher writes it
            # with the welcome (one write, not two).
            self.server.pending.push(self.outbox, accept)
        else:  # the client waits for the 101 before its hello: now
            await self._write_through(accept)
        return True

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, *, until_hello: bool) -> None:
        """Read and handle frames until a close is decided, the peer leaves, or hello arrives."""
        while self._close is None:
            more = self._handle_events()
            if self.session.deferred is not None and self._close is None:
                await self._resume_deferred()
                more = True  # frames behind it may be buffered already
            self.server.flusher.poke()
            if self._close is not None or (until_hello and self.session.established):
                return
            if more:  # one read brought a lot: let the flusher and other connections run first
                await trio.lowlevel.checkpoint()
                continue
            handshake.release_buffer(self._ws)  # (idle memory)
            data = await self._receive() if self.tls is not None else self._take()
            if data is not None and self.tls is None:
                await trio.lowlevel.checkpoint()  # (data was there at once: still yield)
            while data is None:  # idle: wait here, not in _receive (~230 bytes less per idle
                try:  # connection: a coroutine; _readable does the same)
                    await trio.lowlevel.wait_readable(self.sock)
                except (OSError, trio.ClosedResourceError):
                    data = b""
                else:
                    data = self._take()
            if not data:
                self._close = Close(CloseCode.NORMAL, "peer closed the TCP connection")
                self._abort = True
                return
            self.budget.refill(self.last_seen)
            self._close = self.budget.charge_bytes(len(data))
            if self._close is None:
                self._ws.receive_data(data)  # wsproto copies it into its buffer...
            del data  # ...so it is not kept alive while the next read waits

    def _handle_events(self) -> bool:
        """Handle buffered frames, at most EVENTS_PER_BATCH; True if more may be waiting."""
        budget = self.budget
        handled = 0
        for event in self._ws.events():
            self._close = budget.charge_frame()
            if self._close is not None:
                return False
            if isinstance(event, BytesMessage):
                limit = self.server.config.limits.max_message_bytes
                try:
                    self._assembly, message = assemble(
                        self._assembly, bytes(event.data), event.message_finished, limit
                    )
                except MessageTooBig as exc:
                    self._close = Close(CloseCode.MESSAGE_TOO_BIG, exc.message)
                    return False
                if message is not None:
                    self._close = self.session.receive(
                        message, trio.current_time(), self.server.wall()
                    )
                    if self._close is not None and self._close.code == CloseCode.SLOW_CONSUMER:
                        self.server.flusher.slow_reply(self)  # replies beyond the budget
                    if self.session.deferred is not None:
                        return True  # the next frames wait for its answer (request order)
            elif isinstance(event, TextMessage):
                self._close = Close(CloseCode.UNSUPPORTED_DATA, "text frames are not accepted")
            elif isinstance(event, Ping):
                self.server.pending.push(self.outbox, self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._close = Close(event.code, event.reason or "")
            if self._close is not None:
                return False
            handled += 1
            if handled == EVENTS_PER_BATCH:
                return True
        return False

    async def _resume_deferred(self) -> None:
        """Await the broker's (or the app's hook's) answer to the deferred request (bounded),
        then reply."""
        while (deferred := self.session.deferred) is not None and self._close is None:
            timeout = math.inf if deferred.bounded else self.server.config.broker.command_timeout
            if deferred.timeout is not None:  # a hook call ends by then itself: a backstop
                timeout = deferred.timeout + HOOK_MARGIN
            value, failure = None, None
            with trio.move_on_after(timeout) as scope:
                try:
                    value = await deferred.wait()
                except BrokerUnavailable as exc:
                    failure = str(exc)
            if scope.cancelled_caught:
                failure = f"the broker did not answer within {timeout:g} s"
            self._close = self.session.resume(
                value, failure, trio.current_time(), self.server.wall()
            )
            if self._close is not None and self._close.code == CloseCode.SLOW_CONSUMER:
                self.server.flusher.slow_reply(self)

    # -- closing ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        """Send our close frame (or answer the peer's), flush it, then wait for the peer."""
        assert self._close is not None
        close = self._close
        self._leave_channels()  # first: no fan-out may queue anything behind the close
        self.server.flusher.poke()
        if self._discard:
            del self.outbox.items[1 if self._partial_head() else 0 :]
        if self._ws is not None and self._ws.state in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            self.outbox.items.append(self._ws.send(CloseConnection(close.code, close.reason)))
        with trio.move_on_after(self.server.config.limits.close_timeout):
            await self._write_through()
            while self._ws is not None and self._ws.state is ConnectionState.LOCAL_CLOSING:
                data = await self._receive()
                if not data:
                    break
                self._ws.receive_data(data)
                for _ in self._ws.events():
                    pass

    def _leave_channels(self) -> None:
        """The session leaves its channels (once; a failure is logged and the close goes on)."""
        if self._left:
            return
        self._left = True
        try:
            self.session.disconnected()
        except Exception:
            log.exception("connection %s (%s): leaving its channels failed", self.id, self.remote)

    def _partial_head(self) -> bool:
        items = self.outbox.items
        return bool(items) and isinstance(items[0], memoryview)

    # -- writing ------------------------------------------------------------------------------

    def start_drain(self) -> None:
        """The socket is full: a drain task owns it until the outbox is empty.

        Only one task may wait for the socket to become writable, so the flusher leaves a
        blocked connection alone (it only counts its bytes against the budget).
        """
        if not self.blocked and self._nursery is not None and self._close is None:
            # (once a close is decided, _finish writes the rest: the nursery may be exiting)
            self.blocked = True
            self._nursery.start_soon(self._drain_task)

    async def _drain_task(self) -> None:
        try:
            await self._drain()
        finally:
            self.blocked = False
