"""The server API's operations, shared by the HTTP API and the in-process API (sans-IO).

Each operation validates its arguments (an :class:`ApiError` with an HTTP status and a code
from protocol.md otherwise), acts on one app, and returns an :class:`Outcome`: the result the
caller gets, and the connections the transport must close (with which close code). Server
operations are never rate limited: the backend is trusted, clients are not -- so member
listings here ignore the channel rules' ``presence`` permission. ``now`` is monotonic seconds
(revocation TTLs), ``wall`` Unix time (timestamps).
"""

from __future__ import annotations

import heapq
import itertools
import operator
import re
from collections.abc import Iterable, Sized
from typing import Any

import attrs

from rtcore.config.model import Limits
from rtcore.core import membership
from rtcore.core.app import App
from rtcore.core.history import Retention, Slice, check_since, page
from rtcore.core.members import Member
from rtcore.core.session.history import DEFAULT_HISTORY_PAGE
from rtcore.core.session.requests import DEFAULT_MEMBERS_PAGE
from rtcore.protocol import CloseCode, ErrorCode, RemoteProtocolError, RtcoreError, values
from rtcore.protocol.close import Close
from rtcore.protocol.names import check_channel, check_event
from rtcore.protocol.position import Position

USER_EVENT_KINDS = (
    "signin",
    "signout",
    "profile_update",
    "password_change",
    "email_change",
    "phone_change",
)
"""The kinds rtcore knows; others matching ``USER_EVENT_NAME`` are delivered as they are."""
USER_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
SECRET_FIELDS = frozenset(
    {"token", "access_token", "refresh_token", "id_token", "password", "password_hash", "secret"}
)
"""Fields a user event may not carry to clients, at any depth: the backend must leave them out.
A key matches whatever its case and its ``_``/``-``/space separators (``accessToken``,
``Access-Token`` and ``ACCESS_TOKEN`` all match ``access_token``)."""
_SECRET_KEYS = frozenset(name.replace("_", "") for name in SECRET_FIELDS)
_SEPARATORS = str.maketrans("", "", "_- ")


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and key.lower().translate(_SEPARATORS) in _SECRET_KEYS


class ApiError(RtcoreError):
    """A server-API request was refused: ``status`` is its HTTP status, ``code`` its code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@attrs.frozen
class Outcome:
    """The result for the caller, and connections to close (member, close)."""

    result: dict[str, Any]
    closing: list[tuple[Member, Close]] = attrs.field(factory=list)


def _checked(check: Any, value: str) -> None:
    try:
        check(value)
    except RemoteProtocolError as exc:
        raise ApiError(422, exc.code.value, exc.message) from None


def valid_data(value: Any, field: str) -> Any:
    """The value, or ApiError 400 ``invalid_data`` (protocol.md §4.3.1)."""
    try:
        values.check(value, field)
    except RemoteProtocolError as exc:
        raise ApiError(400, exc.code.value, exc.message) from None
    return value


def valid_channel(channel: str) -> str:
    """The channel name, or ApiError 422 ``invalid_channel``."""
    _checked(check_channel, channel)
    return channel


def send(app: App, channel: str, event: str, data: Any, wall: float) -> Outcome:
    valid_channel(channel)
    _checked(check_event, event)
    valid_data(data, "data")
    sent = app.send(channel, event, data, wall=wall)
    result = {"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients}
    return Outcome(result if sent.position is None else {**result, **sent.position.to_wire()})


def broadcast(app: App, event: str, data: Any, wall: float) -> Outcome:
    _checked(check_event, event)
    valid_data(data, "data")
    sent = app.broadcast(event, data, wall=wall)
    return Outcome({"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients})


def members_limit(channel: str, limit: int | None, page_max: int) -> int:
    """The page size of a member listing (checking the channel name too)."""
    valid_channel(channel)
    limit = DEFAULT_MEMBERS_PAGE if limit is None else limit
    if not 1 <= limit <= page_max:
        raise ApiError(400, ErrorCode.BAD_REQUEST.value, f"limit must be from 1 to {page_max}")
    return limit


def members(app: App, channel: str, after: int | None, limit: int | None, page_max: int) -> Outcome:
    """A page of the channel's members, whatever its ``presence`` rule (the backend is
    trusted). With a shared broker, the trio layer asks the broker instead (the cluster's
    members: :func:`members_listed`)."""
    limit = members_limit(channel, limit, page_max)
    page, cursor = app.table.page(channel, after, limit)
    return Outcome({"members": [m.info(channel) for m in page], "next": cursor})


def members_listed(infos: list[Any], cursor: int | None) -> Outcome:
    """A page of the cluster's members, as the broker listed them."""
    return Outcome({"members": infos, "next": cursor})


def history_request(
    app: App, channel: str, limit: int | None, limits: Limits
) -> tuple[Retention, int]:
    """Check a history request: the channel's retention and the page size (404
    ``history_unavailable`` for a channel without history, 400 for a bad limit)."""
    valid_channel(channel)
    retention = app.retention(channel)
    if retention is None:
        raise ApiError(404, ErrorCode.HISTORY_UNAVAILABLE.value, f"{channel!r} keeps no history")
    limit = DEFAULT_HISTORY_PAGE if limit is None else limit
    if not 1 <= limit <= limits.max_history_page:
        raise ApiError(
            400, ErrorCode.BAD_REQUEST.value, f"limit must be from 1 to {limits.max_history_page}"
        )
    return retention, limit


def history_page(
    found: Slice, since: Position | None, reverse: bool, limit: int, limits: Limits
) -> Outcome:
    """A history page from a read of ``limit + 1`` entries (409 ``unrecoverable_position``
    for a ``since`` no longer in the stream)."""
    if since is not None:
        try:
            check_since(since, found, reverse)
        except RemoteProtocolError as exc:
            raise ApiError(409, exc.code.value, exc.message) from None
    return Outcome(page(found, limit, limits.outbound_buffer_bytes // 2))


def history(
    app: App,
    channel: str,
    since: Position | None,
    limit: int | None,
    reverse: bool,
    wall: float,
    limits: Limits,
) -> Outcome:
    """A page of the channel's history (protocol.md §4.11), whatever its ``history`` rule
    (the backend is trusted), from this node's store (with a shared broker the trio layer
    reads the broker's instead: :func:`history_request`, :func:`history_page`)."""
    _, limit = history_request(app, channel, limit, limits)
    found = app.history(channel, since, limit + 1, reverse, wall)
    return history_page(found, since, reverse, limit, limits)


def publish_user_event(
    app: App,
    user: str,
    kind: str,
    session: dict[str, Any] | None,
    data: dict[str, Any] | None,
    now: float,
    wall: float,
) -> Outcome:
    """Deliver a user event to ``user``'s connections; a sign-out ends that session of the
    user (no other user's session of the same id)."""
    if not isinstance(user, str) or not user or not values.is_text(user):
        raise ApiError(400, "bad_request", "user must be a non-empty string (valid Unicode)")
    if not isinstance(kind, str) or not USER_EVENT_NAME.fullmatch(kind):
        raise ApiError(400, "bad_request", "event must be 1-64 characters of a-z 0-9 _")
    for name, value in (("session", session), ("data", data)):
        if value is not None and not isinstance(value, dict):
            raise ApiError(400, "bad_request", f"{name} must be an object")
        valid_data(value, name)
        secret = values.find_key(value, name, _is_secret)
        if secret is not None:
            raise ApiError(
                400, "bad_request", f"{secret}: secrets are never sent to clients; leave it out"
            )
    if session is not None and not isinstance(session.get("id"), str):
        raise ApiError(400, "bad_request", "session.id must be a string")
    if kind == "signout" and session is None:
        raise ApiError(400, "bad_request", "a signout needs the session it ends")
    done = app.publish_user_event(user, kind, session, data, now, wall)
    reason = Close(CloseCode.SESSION_ENDED, f"the session was ended ({kind})")
    return Outcome(
        {
            "delivered": done.delivered,
            "ended_sessions": done.ended_sessions,
            "closed": len(done.closing),
        },
        [(m, reason) for m in done.closing],
    )


def disconnect_user(app: App, user: str, *, forward: bool = True) -> Outcome:
    """Close every connection of ``user`` (4017). Their sessions stay valid. With a shared
    broker every node closes its own (``forward``); ``closed`` counts this node's."""
    if forward and app.broker.shared:
        app.broker.control(app.name, "disconnect_user", [user])
    conns = list(app.table.user(user).values())
    reason = Close(CloseCode.DISCONNECTED, "disconnected by the app")
    return Outcome({"closed": len(conns)}, [(m, reason) for m in conns])


def disconnect_session(
    app: App, user: str, session: str, revoke: bool, now: float, wall: float
) -> Outcome:
    """Close the connections of ``user``'s ``session``: with ``revoke``, end it (4016), else
    4017. Session ids are the backend's and need only be unique per user, hence the user.
    With a shared broker every node does the same to its own connections."""
    if revoke:
        conns = app.end_session(user, session, now, wall)
        reason = Close(CloseCode.SESSION_ENDED, "the session was ended by the app")
    else:
        if app.broker.shared:
            app.broker.control(app.name, "disconnect_session", [user, session])
        conns = list(app.table.session(user, session).values())
        reason = Close(CloseCode.DISCONNECTED, "disconnected by the app")
    return Outcome({"closed": len(conns), "revoked": revoke}, [(m, reason) for m in conns])


MAX_REMOVE_MESSAGE = 256
"""Longest ``message`` of a server-side remove (the ``left`` frame's ``msg``)."""


def _whom(user: object, conn: object) -> tuple[str | None, str | None]:
    """A server-side add or remove's target: a user, a connection id, or both (400 else)."""
    for name, value in (("user", user), ("conn", conn)):
        if value is not None and (
            not isinstance(value, str) or not value or not values.is_text(value)
        ):
            raise ApiError(400, "bad_request", f"{name} must be a non-empty string")
    if user is None and conn is None:
        raise ApiError(400, "bad_request", "give user (every connection of it), conn, or both")
    return user, conn  # type: ignore[return-value]


def _targets(app: App, user: str | None, conn: str | None) -> list[Member]:
    """This node's connections of ``user`` (all, or the one with id ``conn``), or the
    connection ``conn`` (anonymous ones too)."""
    if conn is None:
        return list(app.table.user(user).values()) if user is not None else []
    member = app.table.everyone.get(conn)
    if member is None or (user is not None and member.user != user):
        return []
    return [member]


def add_member(
    app: App,
    channel: str,
    user: object,
    conn: object,
    max_channels: int,
    wall: float,
    *,
    forward: bool = True,
) -> Outcome:
    """Put every connection of ``user`` (or only connection ``conn``) into ``channel``
    (protocol.md §5.7), whatever the channel rules say (the backend is trusted) but within
    ``max_channels``. A user-wide add is remembered: the user's later connections are put
    back at hello. With a shared broker every node does the same (``forward``); the counts
    are this node's."""
    valid_channel(channel)
    user, conn = _whom(user, conn)
    if forward and app.broker.shared:
        app.broker.control(app.name, "add", [channel, user, conn, max_channels])
    if conn is None and user is not None:
        app.server_channels.remember(user, channel)
    done = [
        membership.add(app, m, channel, "added", max_channels, wall)
        for m in _targets(app, user, conn)
    ]
    return Outcome({"added": done.count(membership.ADDED), "full": done.count(membership.FULL)})


def remove_member(
    app: App, channel: str, user: object, conn: object, message: object, *, forward: bool = True
) -> Outcome:
    """Take every connection of ``user`` (or only connection ``conn``) out of ``channel``
    with a ``left`` frame, reason ``removed`` (protocol.md §5.6); a user-wide remove also
    forgets a user-wide add. With a shared broker every node does the same."""
    valid_channel(channel)
    user, conn = _whom(user, conn)
    if message is None:
        message = f"the app took you out of {channel!r}"
    if not isinstance(message, str) or len(message) > MAX_REMOVE_MESSAGE:
        raise ApiError(
            400,
            "bad_request",
            f"message must be a string of at most {MAX_REMOVE_MESSAGE} characters",
        )
    valid_data(message, "message")
    if forward and app.broker.shared:
        app.broker.control(app.name, "remove", [channel, user, conn, message])
    if conn is None and user is not None:
        app.server_channels.forget(user, channel)
    removed = [app.remove(m, channel, "removed", message) for m in _targets(app, user, conn)]
    return Outcome({"removed": sum(removed)})


def apply_control(app: App, op: str, args: Any, now: float, wall: float) -> Outcome:
    """Apply to this node's connections what another node's server API did to its own
    (a shared broker's control message, docs/scaling.md). Unknown operations (a newer node)
    are ignored by the caller, which logs them."""
    if op == "user_event":
        user, kind, session, data, at = args
        done = app.publish_user_event(user, kind, session, data, now, at, forward=False)
        reason = Close(CloseCode.SESSION_ENDED, f"the session was ended ({kind})")
        return Outcome({"closed": len(done.closing)}, [(m, reason) for m in done.closing])
    if op == "disconnect_user":
        return disconnect_user(app, args[0], forward=False)
    if op == "add":
        channel, user, conn, max_channels = args
        return add_member(app, channel, user, conn, max_channels, wall, forward=False)
    if op == "remove":
        channel, user, conn, message = args
        return remove_member(app, channel, user, conn, message, forward=False)
    if op == "disconnect_session":
        user, session = args
        conns = list(app.table.session(user, session).values())
        reason = Close(CloseCode.DISCONNECTED, "disconnected by the app")
        return Outcome({"closed": len(conns)}, [(m, reason) for m in conns])
    if op == "revoke":
        user, session, until = args
        app.revoked_until(user, session, until, now, wall)
        conns = list(app.table.session(user, session).values())
        reason = Close(CloseCode.SESSION_ENDED, "the session was ended by the app")
        return Outcome({"closed": len(conns)}, [(m, reason) for m in conns])
    raise ValueError(f"unknown control operation {op!r}")


STATS_TOP = 100
"""How many of the largest channels the stats list."""

Sizes = list[tuple[str, int]]
"""(channel, members), largest first."""


def largest(best: Sizes, groups: Iterable[tuple[str, Sized]], top: int) -> Sizes:
    """The ``top`` largest of ``best`` and ``groups``: feed a large table a slice at a time
    (the trio layer yields between slices), ties in the order channels were fed."""
    sizes = itertools.chain(best, ((name, len(group)) for name, group in groups))
    return heapq.nlargest(top, sizes, key=operator.itemgetter(1))


def stats(app: App, top: int = STATS_TOP, sizes: Sizes | None = None) -> Outcome:
    """Connections, channels, and the members of the ``top`` largest channels (``sizes``, if
    the caller computed them with :func:`largest` already)."""
    channels = app.table.channels()
    if sizes is None:
        sizes = largest([], channels.items(), top)
    return Outcome(
        {"connections": len(app.table), "channels": len(channels), "members": dict(sizes)}
    )
