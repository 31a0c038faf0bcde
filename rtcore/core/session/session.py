"""One connection's protocol logic (sans-IO): frames in, replies and fan-out out.

Theory of operation: a :class:`Session` starts waiting for ``hello``. A valid hello makes it
a member of its app (welcome reply); anything else closes the connection (protocol.md §3.1).
After that every request gets exactly one reply, ``ok`` or ``err``, queued on the session's own
outbox in request order; deliveries to other connections go through the app's channel table.
``receive`` never raises for anything the peer sends: it returns a :class:`Close` when the
connection must end, and ``None`` otherwise.

Two clocks are passed in, never read: ``now`` is monotonic seconds (rate limiter buckets,
revocation TTLs), ``wall`` is Unix time (timestamps users see, token ``exp``/``nbf`` and API
key expiry dates, which are calendar dates).

Invariants: the hello checks run in protocol.md §3.4's order, so a refusal never reveals
anything about a later credential; what a connection's outbox held when a flush pass's
replies began, plus those replies, never exceeds ``outbound_buffer_bytes`` (the reply that
would closes the connection with 4008 instead);
``_refusals`` counts the rate-limit refusals since the last admitted request.

A request whose answer is the cluster's (with a shared broker: a member listing, a join that
must wait for this node's subscription, a shared rate limit) is *deferred*: ``receive``
records a :class:`Deferred` in ``deferred`` instead of replying. The server awaits its
``wait()`` -- the only coroutine involved, made by the broker -- bounded by ``[broker]
command_timeout``, and hands the outcome to :meth:`Session.resume`, which replies. The
server reads no further frame from the connection meanwhile, so replies stay in request
order.

The rooms: this module is the state machine (hello, admission, rate limits, replies within
the outbound budget); the hello's checks are in :mod:`.hello`, each request's handler in
:mod:`.requests` (history's in :mod:`.history`), dispatched by frame class through
``_HANDLERS``; handlers see the session through the narrow :class:`.context.Context`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rtcore import observe
from rtcore.config.model import Config
from rtcore.core import membership
from rtcore.core.app import App, framed
from rtcore.core.auth import Principal
from rtcore.core.limits.bucket import TokenBucket
from rtcore.core.limits.limiter import Refusal
from rtcore.core.members import Member
from rtcore.core.outbox import Outbox, Pending
from rtcore.core.permissions import ChannelToken
from rtcore.core.session import access, hooked, requests
from rtcore.core.session import history as session_history
from rtcore.core.session.context import Result
from rtcore.core.session.deferred import Deferred, unused_then
from rtcore.core.session.hello import admit, asks_connect, check_hello, open_to
from rtcore.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode, RemoteProtocolError, codec
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from rtcore.protocol.errors import LocalProtocolError


class Session:
    """The protocol state of one connection.

    Args:
        conn_id: the connection's id, unique in the server; its member id.
        apps: the apps this server hosts, by name.
        config: limits and the default app.
        pending: where queued outboxes are recorded for the flusher.
        owner: the transport's object for this connection (stored on the outbox).
    """

    __slots__ = (
        "conn_id",
        "outbox",
        "app",
        "member",
        "principal",
        "channel_tokens",
        "remote",
        "origin",
        "_apps",
        "_config",
        "limits",
        "_pending",
        "_key",
        "_refusals",
        "_pass",
        "_reply_bytes",
        "_presence",
        "deferred",
        "handshake",
    )

    def __init__(
        self,
        conn_id: str,
        apps: Mapping[str, App],
        config: Config,
        pending: Pending,
        owner: object = None,
        remote: str = "?",
    ) -> None:
        self.conn_id = conn_id
        self.outbox = Outbox(owner)
        self.app: App | None = None
        self.member: Member | None = None
        self.principal: Principal | None = None
        """The signed-in user, when the hello carried a valid session token."""
        self.channel_tokens: Mapping[str, ChannelToken] = access.NO_TOKENS
        """The channel tokens the connection holds (rtcore.core.session.access)."""
        self.remote = remote
        """The peer's IP address: the rate-limit key of anonymous clients."""
        self.origin: str | None = None
        """The upgrade's Origin header (None: it had none), for the API key's restrictions."""
        self._apps = apps
        self._config = config
        self.limits = config.limits
        self._pending = pending
        self._key: str | None = None
        self._refusals = 0
        """Rate-limit refusals in a row (reset by an admitted request)."""
        self._pass = -1
        """The flush pass (``Pending.passes``) that ``_reply_bytes`` counts within."""
        self._reply_bytes = 0
        """Bytes queued for this connection as this pass's replies began, plus those replies."""
        self.deferred: Deferred | None = None
        """The request awaiting the broker's answer (the server resumes it); None mostly."""
        self.handshake: Sequence[tuple[bytes, bytes]] = ()
        """The upgrade request's headers until the hello is answered (the connect hook's
        cookies and chosen headers), then nothing."""
        self._presence: TokenBucket | None = None
        """The connection's presence bucket (joins, profile updates), once it made one."""

    @property
    def established(self) -> bool:
        return self.member is not None

    def receive(self, data: bytes, now: float, wall: float) -> Close | None:
        """Handle one complete binary WebSocket message from the peer.

        ``now``: monotonic seconds; ``wall``: Unix time (see the module docstring).
        """
        try:
            frame = codec.decode_client_frame(data)
        except RemoteProtocolError as exc:
            if exc.close_code is not None:
                return Close(exc.close_code, exc.message)
            if self.member is None:
                return Close(CloseCode.HELLO_EXPECTED, exc.message)
            if exc.frame_type == "hello":  # malformed or not, a second hello ends it
                return Close(CloseCode.DUPLICATE_HELLO, "hello was already received")
            if self.app is not None:
                observe.refused(self.app, self.conn_id, exc.code.value, "undecodable")
            return self.error(exc.request_id, exc.code, exc.message)
        if self.member is None:
            return self._hello(frame, now, wall)
        if isinstance(frame, f.Hello):
            return Close(CloseCode.DUPLICATE_HELLO, "hello was already received")
        operation = _OPERATIONS.get(type(frame))
        if operation is not None and self.app is not None:
            app = self.app
            presence = self._presence_bucket(app, operation, now)
            if presence is not None and not presence.tokens >= 1.0:
                over = Refusal(PRESENCE_LIMITER, PRESENCE_MESSAGE, presence.wait())
                return self._rate_limited(app, frame, operation, over)
            if app.limiter:
                if app.broker.shared and app.limiter.client_rules(operation):
                    return self._charge_shared(app, frame, operation, now, wall)
                refusal = self._charge(app, operation, now)
                if refusal is not None:
                    return self._rate_limited(app, frame, operation, refusal)
            if presence is not None:
                presence.spend()
                self._refusals = 0
        return self._handle(frame, now, wall)

    def _presence_bucket(self, app: App, operation: str, now: float) -> TokenBucket | None:
        """The connection's presence bucket, refilled to ``now``, for a join or a profile
        update when the app limits presence (protocol.md §4.1); None otherwise. Made on the
        first presence request: idle connections stay small."""
        rate = app.settings.presence_rate
        if operation not in PRESENCE_OPERATIONS or not rate:
            return None
        bucket = self._presence
        burst = float(app.settings.presence_burst)
        if bucket is None or (bucket.rate, bucket.capacity) != (rate, burst):  # (a reload)
            bucket = self._presence = TokenBucket(burst, rate, now)
        bucket.refill(now)
        return bucket

    def _rate_limited(
        self, app: App, frame: f.Request, operation: str, refusal: Refusal
    ) -> Close | None:
        close = self._refused(app, frame.id, refusal)
        observe.rate_limited(app, self.conn_id, refusal.rule, operation, replied=close is None)
        return close

    def _charge_shared(
        self, app: App, frame: f.Request, operation: str, now: float, wall: float
    ) -> Close | None:
        """Rate limits with a shared broker: the connection's own buckets here, the client's
        (user or IP) in the cluster -- a token from each, or from none (the request waits
        for the cluster's answer; Redis away: this node's buckets stand in)."""
        limiter, conn = app.limiter, self.conn_id
        client_key = self._client_key()
        refusal = limiter.check(operation, client_key, conn, now, scope="connection", take=False)
        if refusal is not None:
            return self._rate_limited(app, frame, operation, refusal)
        rules, broker = limiter.client_rules(operation), app.broker

        def charged(
            value: Refusal | None, failure: str | None, now: float, wall: float
        ) -> Close | None:
            if failure is not None:  # Redis away: this node's buckets for the client's rules
                refusal = limiter.check(operation, client_key, conn, now, scope="client")
            else:
                refusal = value
            if refusal is None:
                refusal = limiter.check(operation, client_key, conn, now, scope="connection")
            if refusal is not None:
                return self._rate_limited(app, frame, operation, refusal)
            self._refusals = 0
            if (presence := self._presence_bucket(app, operation, now)) is not None:
                presence.spend()  # (checked before the broker was asked)
            return self._handle(frame, now, wall)

        self.deferred = Deferred(
            frame.id, lambda: broker.take(app.name, client_key, rules), unused_then, charged
        )
        return None

    def _client_key(self) -> str:
        return f"u:{self.principal.user}" if self.principal else f"ip:{self.remote}"

    def _handle(self, frame: f.Request, now: float, wall: float) -> Close | None:
        """Run an admitted request: reply, or defer it (see the module docstring)."""
        try:
            result = _HANDLERS[type(frame)](self, frame, now, wall)
        except RemoteProtocolError as exc:
            code = getattr(exc, "backend_code", None) or exc.code.value  # a hook's own code
            return self.refuse(frame.id, code, exc.message, frame.TYPE)
        return self.answer(frame.id, result)

    def answer(self, request_id: int, result: Result | Deferred) -> Close | None:
        """Reply ``ok`` with ``result``, or defer it (see the module docstring)."""
        if isinstance(result, Deferred):
            self.deferred = result
            return None
        return self._reply(f.Ok(request_id, result))

    def refuse(
        self, request_id: int, code: str, message: str, operation: str = "deferred"
    ) -> Close | None:
        """Reply ``err`` with ``code`` (one of protocol.md §6, or a hook's own), counted."""
        if self.app is not None:
            observe.refused(self.app, self.conn_id, code, operation)
        return self._reply(f.Err(request_id, code, message))

    def resume(self, value: object, failure: str | None, now: float, wall: float) -> Close | None:
        """The broker answered the deferred request (``value``), or could not (``failure``
        says why: then the reply is ``broker_unavailable``)."""
        deferred, self.deferred = self.deferred, None
        if deferred is None:
            raise LocalProtocolError("resume without a deferred request")
        if deferred.resume is not None:
            return deferred.resume(value, failure, now, wall)
        if failure is not None:
            if deferred.undo is not None:
                deferred.undo()
            if self.app is not None:
                observe.refused(self.app, self.conn_id, ErrorCode.BROKER_UNAVAILABLE.value, "")
            return self.error(deferred.request_id, ErrorCode.BROKER_UNAVAILABLE, failure)
        try:
            result = deferred.then(value, now, wall)
        except RemoteProtocolError as exc:
            if self.app is not None:
                observe.refused(self.app, self.conn_id, exc.code.value, "deferred")
            return self.error(deferred.request_id, exc.code, exc.message)
        if isinstance(result, Deferred):
            self.deferred = result
            return None
        return self._reply(f.Ok(deferred.request_id, result))

    def _charge(self, app: App, operation: str, now: float) -> Refusal | None:
        """Take a token from each of the app's limiters for this client, or refuse."""
        refusal = app.limiter.check(operation, self._client_key(), self.conn_id, now)
        if refusal is None:
            self._refusals = 0
        return refusal

    def _refused(self, app: App, request_id: int, refusal: Refusal) -> Close | None:
        """Reply rate_limited, at most ``refusals_before_disconnect`` times in a row: the next
        refused request of the row closes the connection (4030) instead (protocol.md §4.1)."""
        self._refusals += 1
        allowed = app.settings.refusals_before_disconnect
        if self._refusals > allowed:
            return Close(
                CloseCode.RATE_LIMIT_ABUSE,
                f"{self._refusals} rate-limited requests in a row (at most {allowed} are answered)",
            )
        return self._reply(
            f.Err(
                request_id,
                ErrorCode.RATE_LIMITED.value,
                refusal.message,
                refusal.rule,
                # (config bounds keep it under a day; the clamp keeps it a uint whatever)
                min(math.ceil(refusal.retry_after * 1000), codec.MAX_REQUEST_ID),
            )
        )

    def revalidate(self, wall: float) -> Close | None:
        """Check the connection against the app's current settings (after a reload, and
        periodically for key and token expiry, against ``wall``): a Close if it may no longer
        stay."""
        if self.app is None:
            return None
        if self._apps.get(self.app.name) is not self.app:
            return Close(CloseCode.UNKNOWN_APP, f"app {self.app.name!r} was removed")
        close = open_to(self.app, self._key, wall, self.origin, self.remote) or admit(
            self.app, self.principal, reconnect=False
        )
        if close is None and self._token_expired(self.app, wall):
            close = Close(CloseCode.SESSION_EXPIRED, "the session token expired (send refresh)")
        if close is None:
            access.expire(self, wall)  # channel tokens: out of their channels, not closed
        return close

    def _token_expired(self, app: App, wall: float) -> bool:
        settings = app.settings.session
        return (
            settings is not None
            and settings.expire_connections
            and self.principal is not None
            and self.principal.expires is not None
            and wall > self.principal.expires + settings.leeway
        )

    def disconnected(self) -> None:
        """The connection is ending: leave every channel (members hear member_leave).

        Idempotent. Called before the close frame is queued, so that no fan-out can queue a
        message behind it.
        """
        if self.member is not None and self.app is not None:
            self.app.disconnect(self.member)
            self.app.limiter.forget_connection(self.conn_id)
            if self.app.events.wants("connection_closed"):
                self.app.events.emit(
                    "connection_closed", {"conn": self.conn_id, "user": self.member.user}
                )
            self.member = None

    # -- hello (the checks: rtcore.core.session.hello) ---------------------------------

    def _hello(self, frame: f.ClientFrame, now: float, wall: float) -> Close | None:
        if not isinstance(frame, f.Hello):
            return Close(CloseCode.HELLO_EXPECTED, "the first frame must be hello")
        checked = check_hello(
            frame, self._apps, self._config, now, wall, (self.origin, self.remote)
        )
        if isinstance(checked, Close):
            return checked
        app, principal = checked
        if asks_connect(app):  # the backend's answer decides, then the welcome (§3.4)

            def welcome(who: Principal | None, profile: object, wall: float) -> Close | None:
                return self._welcome(app, who, frame, profile, wall)

            asked = hooked.connect(app, self, frame, self.handshake, principal, welcome)
            if isinstance(asked, Close):
                return asked
            self.deferred = asked
            return None
        return self._welcome(app, principal, frame, frame.profile, wall)

    def _welcome(
        self, app: App, principal: Principal | None, frame: f.Hello, profile: object, wall: float
    ) -> Close | None:
        """The hello is admitted: the connection joins its app."""
        self.app, self.principal, self._key = app, principal, frame.key
        self.handshake = ()
        user = principal.user if principal else None
        features = tuple(x for x in f.FEATURES if x in frame.features)
        self.member = Member(
            self.conn_id,
            user,
            profile,
            self.outbox,
            echo=frame.echo,
            session=principal.session if principal else None,
            diffs="presence_diffs" in features,
        )
        app.connect(self.member)
        if app.events.wants("connection_opened"):
            app.events.emit(
                "connection_opened", {"conn": self.conn_id, "user": user, "ip": self.remote}
            )
        limits = self.limits
        close = self._reply(
            f.Welcome(
                PROTOCOL_VERSION,
                self.conn_id,
                int(wall * 1000),
                int(limits.heartbeat_interval * 1000),
                limits.for_clients(),
                user,
                features or None,
            )
        )
        if close is None:  # after the welcome: the channels the server puts it in (§5.7)
            subscribe = principal.subscribe if principal else ()
            membership.restore(app, self.member, subscribe, limits.max_channels, wall)
        return close

    # -- replies --------------------------------------------------------------------------

    def _reply(self, frame: f.ServerFrame) -> Close | None:
        """Queue a reply for this connection, within the outbound budget (protocol.md §5.3).

        The flusher enforces the budget when it writes; replies are also counted as they are
        queued, so that a pipelined burst of requests handled before the next flush pass
        cannot queue more than the budget: the reply that would exceed it closes the
        connection with 4008 instead. The count starts, at the first reply after a flush
        pass, from what the outbox holds then (what the socket did not take, and fan-out
        since): one sum per pass, not per reply. Fan-out queued later in the pass is not
        counted here (its hot path stays as it is); the flusher accounts for it.
        """
        data = framed(frame)
        if self._pass != self._pending.passes:
            self._pass = self._pending.passes
            self._reply_bytes = sum(map(len, self.outbox.items))
        self._reply_bytes += len(data)
        budget = self.limits.outbound_buffer_bytes
        if self._reply_bytes > budget:
            return Close(
                CloseCode.SLOW_CONSUMER,
                f"a reply would take the outbound buffer beyond {budget} bytes",
            )
        self._pending.push(self.outbox, data)
        if self.app is not None and self.member is not None:
            self.app.member_events.replied(self.member)  # a paused channel's notice (§5.2.2)
        return None

    def queue(self, data: bytes) -> None:
        """Queue a framed message for this connection (a replay), counted like a reply; the
        flusher enforces the budget when it writes."""
        if self._pass != self._pending.passes:
            self._pass = self._pending.passes
            self._reply_bytes = sum(map(len, self.outbox.items))
        self._reply_bytes += len(data)
        self._pending.push(self.outbox, data)

    def error(self, request_id: int | None, code: ErrorCode, message: str) -> Close | None:
        return self._reply(f.Err(request_id, code.value, message))


PRESENCE_OPERATIONS = frozenset({"join", "profile"})
"""What the per-connection presence limit charges (leaves follow joins, and are free)."""
PRESENCE_LIMITER = "presence"
"""The ``limiter`` of a presence refusal (protocol.md §4.1)."""
PRESENCE_MESSAGE = "too many joins and profile updates: slow down"

_OPERATIONS: dict[type[f.Request], str] = {
    f.Join: "join",
    f.GetMembers: "members",
    f.UpdateProfile: "profile",
    f.Send: "send",
    f.Broadcast: "broadcast",
    f.Refresh: "refresh",
    f.History: "history",
}
"""Requests subject to rate limits, by limiter operation name (leave never is)."""

# One table for all sessions (not per session: idle connections must stay small). Each class
# is paired with its own frame's handler; a dict cannot say so, hence the Any.
_HANDLERS: dict[type[f.Request], Callable[[Session, Any, float, float], Result | Deferred]] = {
    f.Join: requests.join,
    f.Leave: requests.leave,
    f.GetMembers: requests.members,
    f.UpdateProfile: requests.profile,
    f.Send: requests.send,
    f.Broadcast: requests.broadcast,
    f.Refresh: requests.refresh,
    f.History: session_history.history,
}
