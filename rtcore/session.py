"""One connection's protocol logic (sans-IO): frames in, replies and fan-out out.

Theory of operation: a :class:`Session` starts waiting for ``hello``. A valid hello makes it
a member of its app (welcome reply); anything else closes the connection (protocol.md §3.1).
After that every request gets exactly one reply, ``ok`` or ``err``, queued on the session's own
outbox in request order; deliveries to other connections go through the app's channel table.
``receive`` never raises for anything the peer sends: it returns a :class:`Close` when the
connection must end, and ``None`` otherwise. ``now`` is wall-clock seconds, passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rtcore import observe
from rtcore.app import App, framed
from rtcore.auth import CredentialError, Principal, check_api_key, verify_session
from rtcore.config import Config
from rtcore.hub import Member
from rtcore.limiter import Refusal
from rtcore.outbox import Outbox, Pending
from rtcore.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode, RemoteProtocolError, codec
from rtcore.protocol import frames as f

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:@/=+~-]{1,128}")
"""protocol.md §4.1: channel names are 1-128 characters of this set."""
MAX_EVENT_NAME = 128
DEFAULT_MEMBERS_PAGE = 100


@attrs.frozen
class Close:
    """The connection must be closed with this code and reason."""

    code: int
    reason: str


def _refuse(code: ErrorCode, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=code)


def check_channel(name: str) -> None:
    if not CHANNEL_NAME.fullmatch(name):
        raise _refuse(
            ErrorCode.INVALID_CHANNEL,
            f"channel name {name[:140]!r} must be 1-128 characters of "
            "A-Z a-z 0-9 _ . : @ / = + ~ -",
        )


def check_event(name: str) -> None:
    if not 1 <= len(name) <= MAX_EVENT_NAME:
        raise _refuse(ErrorCode.INVALID_EVENT, f"event name must be 1-{MAX_EVENT_NAME} characters")


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
        "remote",
        "_apps",
        "_config",
        "_limits",
        "_pending",
        "_key",
        "_refusals",
    )

    def __init__(
        self,
        conn_id: str,
        apps: Mapping[str, App],
        config: Config,
        pending: Pending,
        owner: Any = None,
        remote: str = "?",
    ) -> None:
        self.conn_id = conn_id
        self.outbox = Outbox(owner)
        self.app: App | None = None
        self.member: Member | None = None
        self.principal: Principal | None = None
        """The signed-in user, when the hello carried a valid session token."""
        self.remote = remote
        """The peer's IP address: the rate-limit key of anonymous clients."""
        self._apps = apps
        self._config = config
        self._limits = config.limits
        self._pending = pending
        self._key: str | None = None
        self._refusals = 0

    @property
    def established(self) -> bool:
        return self.member is not None

    def receive(self, data: bytes, now: float) -> Close | None:
        """Handle one complete binary WebSocket message from the peer."""
        try:
            frame = codec.decode(data)
        except RemoteProtocolError as exc:
            if exc.close_code is not None:
                return Close(exc.close_code, exc.message)
            if self.member is None:
                return Close(CloseCode.HELLO_EXPECTED, exc.message)
            self._error(exc.request_id, exc.code, exc.message)
            if self.app is not None:
                observe.refused(self.app, self.conn_id, exc.code.value, "undecodable")
            return None
        if self.member is None:
            return self._hello(frame, now)
        if isinstance(frame, f.Hello):
            return Close(CloseCode.DUPLICATE_HELLO, "hello was already received")
        operation = _OPERATIONS.get(type(frame))
        if operation is not None and self.app is not None and self.app.limiter:
            refusal = self._charge(self.app, operation, now)
            if refusal is not None:
                close = self._refused(self.app, frame.id, refusal)
                observe.rate_limited(
                    self.app, self.conn_id, refusal.rule, operation, replied=close is None
                )
                return close
        try:
            result = _HANDLERS[type(frame)](self, frame, now)
        except RemoteProtocolError as exc:
            self._error(frame.id, exc.code, exc.message)
            if self.app is not None:
                observe.refused(self.app, self.conn_id, exc.code.value, frame.TYPE)
        else:
            self._reply(f.Ok(frame.id, result))
        return None

    def _charge(self, app: App, operation: str, now: float) -> Refusal | None:
        """Take a token from each of the app's limiters for this client, or refuse."""
        client_key = f"u:{self.principal.user}" if self.principal else f"ip:{self.remote}"
        refusal = app.limiter.check(operation, client_key, self.conn_id, now)
        if refusal is None:
            self._refusals = 0
        return refusal

    def _refused(self, app: App, request_id: int, refusal: Refusal) -> Close | None:
        """Reply rate_limited; a client that keeps going past the threshold is closed."""
        self._refusals += 1
        if self._refusals > app.settings.refusals_before_disconnect:
            return Close(
                CloseCode.RATE_LIMIT_ABUSE, f"{self._refusals - 1} rate-limited requests in a row"
            )
        self._reply(
            f.Err(
                request_id,
                ErrorCode.RATE_LIMITED.value,
                refusal.message,
                refusal.rule,
                math.ceil(refusal.retry_after * 1000),
            )
        )
        return None

    def revalidate(self, now: float) -> Close | None:
        """Check the connection against the app's current settings (after a reload, and
        periodically for key expiry): a Close if it may no longer stay."""
        if self.app is None:
            return None
        if self._apps.get(self.app.name) is not self.app:
            return Close(CloseCode.UNKNOWN_APP, f"app {self.app.name!r} was removed")
        close = self._admit(self.app, now, self._key, self.principal, reconnect=False)
        if close is None and self._token_expired(self.app, now):
            close = Close(CloseCode.SESSION_EXPIRED, "the session token expired (send refresh)")
        return close

    def _token_expired(self, app: App, now: float) -> bool:
        settings = app.settings.session
        return (
            settings is not None
            and settings.expire_connections
            and self.principal is not None
            and self.principal.expires is not None
            and now > self.principal.expires + settings.leeway
        )

    def disconnected(self) -> None:
        """The connection is ending: leave every channel (members hear member_leave).

        Idempotent. Called before the close frame is queued, so that no fan-out can queue a
        message behind it.
        """
        if self.member is not None and self.app is not None:
            self.app.disconnect(self.member)
            self.member = None

    # -- hello ----------------------------------------------------------------------------

    def _hello(self, frame: Any, now: float) -> Close | None:
        if not isinstance(frame, f.Hello):
            return Close(CloseCode.HELLO_EXPECTED, "the first frame must be hello")
        if frame.version != PROTOCOL_VERSION:
            return Close(
                CloseCode.UNSUPPORTED_VERSION,
                f"protocol version {frame.version} is not supported; this server speaks "
                f"{PROTOCOL_VERSION}",
            )
        name = frame.app if frame.app is not None else self._config.default_app
        app = self._apps.get(name) if name is not None else None
        if app is None:
            return Close(CloseCode.UNKNOWN_APP, f"unknown app {name!r}" if name else "app required")
        principal = None
        if frame.token is not None and app.settings.session is not None:
            try:
                principal = verify_session(app.settings.session, frame.token, now)
            except CredentialError as exc:
                return Close(exc.code, exc.message)
        elif frame.token is not None:
            return Close(CloseCode.SESSION_INVALID, "this app accepts no session tokens")
        close = self._admit(app, now, frame.key, principal, reconnect=True)
        if close is not None:
            return close
        if principal is not None and app.session_ended(principal.session, now):
            return Close(CloseCode.SESSION_ENDED, "this session was ended; sign in again")
        if not self._profile_fits(frame.profile):
            return Close(
                CloseCode.HELLO_EXPECTED,
                f"profile exceeds {self._limits.max_profile_bytes} bytes",
            )
        self.app, self.principal, self._key = app, principal, frame.key
        user = principal.user if principal else None
        self.member = Member(
            self.conn_id,
            user,
            frame.profile,
            self.outbox,
            echo=frame.echo,
            session=principal.session if principal else None,
        )
        app.connect(self.member)
        self._reply(
            f.Welcome(
                PROTOCOL_VERSION,
                self.conn_id,
                int(now * 1000),
                int(self._limits.heartbeat_interval * 1000),
                self._limits.for_clients(),
                user,
            )
        )
        return None

    def _admit(
        self,
        app: App,
        now: float,
        key: str | None,
        principal: Principal | None,
        *,
        reconnect: bool,
    ) -> Close | None:
        """The app's connection rules: enabled, API key, session, connection count."""
        settings = app.settings
        if not settings.enabled:
            return Close(CloseCode.APP_DISABLED, f"realtime is disabled for app {app.name!r}")
        if settings.api_key_required:
            try:
                check_api_key(settings.api_keys, key, now)
            except CredentialError as exc:
                return Close(exc.code, exc.message)
        if settings.session_required and principal is None:
            return Close(CloseCode.SESSION_MISSING, "this app requires a signed-in user")
        if reconnect and len(app.table) >= settings.max_connections:
            return Close(
                CloseCode.TOO_MANY_CONNECTIONS,
                f"app {app.name!r} has reached its {settings.max_connections} connections",
            )
        return None

    # -- requests -------------------------------------------------------------------------

    def _echo(self, echo: bool | None) -> bool:
        assert self.member is not None
        return self.member.echo if echo is None else echo

    def _allowed(self, policy: str, what: str) -> None:
        if policy == "anyone" or (policy == "signed_in" and self.principal is not None):
            return
        raise _refuse(
            ErrorCode.FORBIDDEN,
            f"{what} is not allowed" if policy == "nobody" else f"{what} needs a signed-in user",
        )

    def _join(self, frame: f.Join, now: float) -> dict[str, Any]:
        assert self.app is not None and self.member is not None
        check_channel(frame.channel)
        settings = self.app.settings
        rule = settings.channel_rule(frame.channel)
        default = "anyone" if settings.allow_client_join else "nobody"
        self._allowed(rule.join if rule else default, f"joining {frame.channel!r}")
        if frame.channel not in self.member.channels and (
            len(self.member.channels) >= self._limits.max_channels
        ):
            raise _refuse(
                ErrorCode.TOO_MANY_CHANNELS,
                f"a connection may be in at most {self._limits.max_channels} channels",
            )
        return {"joined": self.app.join(self.member, frame.channel, self._echo(frame.echo))}

    def _leave(self, frame: f.Leave, now: float) -> dict[str, Any]:
        assert self.app is not None and self.member is not None
        check_channel(frame.channel)
        return {"left": self.app.leave(self.member, frame.channel, self._echo(frame.echo))}

    def _members(self, frame: f.GetMembers, now: float) -> dict[str, Any]:
        assert self.app is not None
        check_channel(frame.channel)
        limit = DEFAULT_MEMBERS_PAGE if frame.limit is None else frame.limit
        if not 1 <= limit <= self._limits.max_members_page:
            raise _refuse(
                ErrorCode.BAD_REQUEST,
                f"members: 'limit' must be from 1 to {self._limits.max_members_page}",
            )
        page, cursor = self.app.table.page(frame.channel, frame.after, limit)
        return {"members": [m.info() for m in page], "next": cursor}

    def _profile(self, frame: f.UpdateProfile, now: float) -> dict[str, Any]:
        assert self.app is not None and self.member is not None
        if not self._profile_fits(frame.data):
            raise _refuse(
                ErrorCode.PROFILE_TOO_LARGE,
                f"profile exceeds {self._limits.max_profile_bytes} bytes",
            )
        return {
            "channels": self.app.update_profile(self.member, frame.data, self._echo(frame.echo))
        }

    def _send(self, frame: f.Send, now: float) -> dict[str, Any]:
        assert self.app is not None and self.member is not None
        check_channel(frame.channel)
        check_event(frame.event)
        settings = self.app.settings
        if not settings.allow_client_send:
            raise _refuse(ErrorCode.FORBIDDEN, f"app {self.app.name!r} does not allow client sends")
        rule = settings.channel_rule(frame.channel)
        if rule is not None:
            self._allowed(rule.send, f"sending to {frame.channel!r}")
        if frame.channel not in self.member.channels:
            raise _refuse(ErrorCode.NOT_MEMBER, f"join {frame.channel!r} before sending to it")
        sent = self.app.send(
            frame.channel,
            frame.event,
            frame.data,
            now=now,
            sender=self.member,
            echo=self._echo(frame.echo),
        )
        return {"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients}

    def _refresh(self, frame: f.Refresh, now: float) -> dict[str, Any]:
        """A fresh token for the same user: the connection lives on past the old one."""
        assert self.app is not None and self.member is not None
        settings = self.app.settings.session
        if settings is None:
            raise _refuse(ErrorCode.FORBIDDEN, f"app {self.app.name!r} takes no session tokens")
        try:
            principal = verify_session(settings, frame.token, now)
        except CredentialError as exc:
            raise _refuse(ErrorCode.INVALID_TOKEN, exc.message) from None
        if self.principal is None or principal.user != self.principal.user:
            raise _refuse(
                ErrorCode.FORBIDDEN,
                "a refresh must be for the connection's own user (to sign in, reconnect)",
            )
        if self.app.session_ended(principal.session, now):
            raise _refuse(ErrorCode.INVALID_TOKEN, "that session was ended; sign in again")
        self.app.table.set_session(self.member, principal.session)
        self.principal = principal
        expires = None if principal.expires is None else int(principal.expires * 1000)
        return {"expires": expires}

    def _broadcast(self, frame: f.Broadcast, now: float) -> dict[str, Any]:
        assert self.app is not None and self.member is not None
        check_event(frame.event)
        if not self.app.settings.allow_client_broadcast:
            raise _refuse(
                ErrorCode.FORBIDDEN, f"app {self.app.name!r} does not allow client broadcasts"
            )
        sent = self.app.broadcast(
            frame.event, frame.data, now=now, sender=self.member, echo=self._echo(frame.echo)
        )
        return {"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients}

    # -- replies --------------------------------------------------------------------------

    def _profile_fits(self, profile: Any) -> bool:
        return len(codec.pack(profile)) <= self._limits.max_profile_bytes

    def _reply(self, frame: Any) -> None:
        self._pending.push(self.outbox, framed(frame))

    def _error(self, request_id: int | None, code: ErrorCode, message: str) -> None:
        self._reply(f.Err(request_id, code.value, message))


_OPERATIONS: dict[type, str] = {
    f.Join: "join",
    f.GetMembers: "members",
    f.UpdateProfile: "profile",
    f.Send: "send",
    f.Broadcast: "broadcast",
    f.Refresh: "refresh",
}
"""Requests subject to rate limits, by limiter operation name (leave never is)."""

# One table for all sessions (not per session: idle connections must stay small).
_HANDLERS: dict[type, Callable[[Session, Any, float], Any]] = {
    f.Join: Session._join,
    f.Leave: Session._leave,
    f.GetMembers: Session._members,
    f.UpdateProfile: Session._profile,
    f.Send: Session._send,
    f.Broadcast: Session._broadcast,
    f.Refresh: Session._refresh,
}
