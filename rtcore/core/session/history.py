"""A session's history requests (sans-IO): joins of channels with history, with or without
``recover``, and ``history`` pages (protocol.md §4.4.1, §4.11, §5.5). Request handlers
like those of :mod:`rtcore.core.session.requests`, on the session's narrow
:class:`~rtcore.core.session.context.Context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtcore.core.history import (
    Entry,
    Recovery,
    Retention,
    Slice,
    check_since,
    decide_recovery,
    page,
    parse_position,
)
from rtcore.core.session import access
from rtcore.core.session.context import Context, Result, wants_echo
from rtcore.core.session.deferred import Deferred, unused_then
from rtcore.protocol import ErrorCode, RemoteProtocolError
from rtcore.protocol import frames as f
from rtcore.protocol.names import check_channel
from rtcore.protocol.position import Position

if TYPE_CHECKING:
    from rtcore.protocol.close import Close

DEFAULT_HISTORY_PAGE = 100


def join_shared(
    session: Context, frame: f.Join, recover: Position | None, retention: Retention
) -> Deferred:
    """A history channel's join with a shared broker: the broker subscribes and reads the
    stream (after ``recover``, or only its top), holding what arrives live meanwhile;
    then, in one step, the member joins and gets the replay and the held messages, and
    the live ones follow (protocol.md §4.4.1, §5.5). The ok waits for the cluster's
    presence too, as every join with a shared broker does."""
    assert session.app is not None and session.member is not None
    app, member, channel, conn = session.app, session.member, frame.channel, session.conn_id
    broker, echo = app.broker, wants_echo(session, frame.echo)
    may = recover is not None and access.allows(session, "history", channel, entering=True)
    limit = session.limits.max_recovery + 1 if may else 0
    since = recover if may else None

    def joined(
        value: tuple[Slice, list[Entry]], failure: str | None, now: float, wall: float
    ) -> Close | None:
        if failure is not None:
            broker.release(app.name, channel)
            return session.error(frame.id, ErrorCode.BROKER_UNAVAILABLE, failure)
        found, held = value
        app.join(member, channel, echo)  # from here on, live messages reach it
        result = {"joined": True, **replay(session, channel, recover, may, found, held)}
        broker.catch_up(app.name, channel, member, result["offset"])
        session.deferred = Deferred(
            frame.id,
            lambda: broker.joined(app.name, channel, conn),
            lambda *_: result,
            undo=lambda: app.leave(member, channel, echo=False),  # refused: no member
        )
        return None

    return Deferred(
        frame.id,
        lambda: broker.prepare_join(app.name, channel, since, limit, retention),
        unused_then,
        joined,
    )


def replay(
    session: Context,
    channel: str,
    recover: Position | None,
    may: bool,
    found: Slice,
    held: list[Entry],
) -> Result:
    """Queue what a history join read (when recovered) and the live messages held after
    it; the join reply's position and recovery fields."""
    top = found.top
    after: list[Entry] = []
    for entry in held:  # in the cluster's order; a hole (pub/sub lost one) stops it
        if entry.epoch == top.epoch and entry.offset == top.offset + len(after) + 1:
            after.append(entry)
    position = Position(top.epoch, top.offset + len(after))
    result: Result = {**position.to_wire()}
    if recover is not None:
        budget = session.limits.outbound_buffer_bytes // 2
        if may:
            whole = Slice(position, found.first, found.entries + after)
            outcome = decide_recovery(recover, whole, session.limits.max_recovery, budget)
        else:
            outcome = Recovery(False, "forbidden", position)
        result["recovered"] = outcome.recovered
        if outcome.reason is not None:
            result["reason"] = outcome.reason
        if outcome.recovered:
            after = []  # the replay includes them
        for entry in outcome.entries:
            session.queue(entry.data)
    for entry in after:
        session.queue(entry.data)
    return result


def position(
    session: Context, channel: str, joined: bool, recover: Position | None, wall: float
) -> Result:
    """A history channel's join: its top, and with ``recover``, the recovery's outcome;
    the missed messages are queued now, before the ok and before any later message
    (nothing runs between the join and this: protocol.md §4.4.1)."""
    assert session.app is not None
    if session.app.retention(channel) is None:
        return {"recovered": False, "reason": "history_off"}
    if recover is None:
        return session.app.history(channel, None, 0, True, wall).top.to_wire()
    budget = session.limits.outbound_buffer_bytes // 2
    if joined and access.allows(session, "history", channel):
        outcome = session.app.recover(channel, recover, session.limits.max_recovery, budget, wall)
    else:
        top = session.app.history(channel, None, 0, True, wall).top
        outcome = Recovery(False, "forbidden" if joined else "already_joined", top)
    for entry in outcome.entries:
        session.queue(entry.data)
    result: Result = {**outcome.top.to_wire(), "recovered": outcome.recovered}
    if outcome.reason is not None:
        result["reason"] = outcome.reason
    return result


def history(session: Context, frame: f.History, now: float, wall: float) -> Result | Deferred:
    """A page of a channel's history (protocol.md §4.11); with a shared broker, the
    cluster's (deferred)."""
    app = session.app
    assert app is not None
    check_channel(frame.channel)
    retention = app.retention(frame.channel)
    if retention is None:
        raise RemoteProtocolError(
            f"channel {frame.channel!r} keeps no history", code=ErrorCode.HISTORY_UNAVAILABLE
        )
    access.enforce(session, "history", frame.channel)
    limit = DEFAULT_HISTORY_PAGE if frame.limit is None else frame.limit
    if not 1 <= limit <= session.limits.max_history_page:
        raise RemoteProtocolError(
            f"history: 'limit' must be from 1 to {session.limits.max_history_page}",
            code=ErrorCode.BAD_REQUEST,
        )
    since = None if frame.since is None else parse_position(frame.since, "since")
    reverse = bool(frame.reverse)
    budget = session.limits.outbound_buffer_bytes // 2

    def paged(found: Slice, now: float, wall: float) -> Result:
        if since is not None:
            check_since(since, found, reverse)
        return page(found, limit, budget)

    if app.broker.shared:
        broker, channel = app.broker, frame.channel
        return Deferred(
            frame.id,
            lambda: broker.read_history(app.name, channel, since, limit + 1, reverse, retention),
            paged,
        )
    return paged(app.history(frame.channel, since, limit + 1, reverse, wall), now, wall)
