"""The handlers of an established connection's requests (sans-IO), one per frame type
(protocol.md §4). Each takes the session's :class:`~rtcore.core.session.context.Context` and
its frame and returns the ``ok`` reply's data, or a :class:`Deferred` when the answer is the
cluster's; a refusal raises :class:`RemoteProtocolError` (an ``err`` reply). The history
requests are in :mod:`rtcore.core.session.history`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rtcore.core.auth import CredentialError, verify_session
from rtcore.core.history import parse_position
from rtcore.core.permissions import ChannelToken
from rtcore.core.session import access, history, hooked
from rtcore.core.session.context import Context, Result, wants_echo
from rtcore.core.session.deferred import Deferred
from rtcore.core.session.hello import check_profile
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from rtcore.protocol.names import check_channel, check_event, refuse
from rtcore.protocol.position import Position
from rtcore.protocol.values import check as check_value

DEFAULT_MEMBERS_PAGE = 100


def join(session: Context, frame: f.Join, now: float, wall: float) -> Result | Deferred:
    app, member = session.app, session.member
    assert app is not None and member is not None
    check_channel(frame.channel)
    token, ask = access.admit_join(session, frame, wall)
    max_channels = session.limits.max_channels
    if frame.channel not in member.channels and len(member.channels) >= max_channels:
        raise refuse(
            ErrorCode.TOO_MANY_CHANNELS,
            f"a connection may be in at most {max_channels} channels",
        )
    recover = None if frame.recover is None else parse_position(frame.recover, "recover")
    if ask and frame.channel not in member.channels:  # the app's join hook decides

        def admitted(info: Any, wall: float) -> Result | Deferred:
            return _admitted_join(session, frame, token, recover, wall, info)

        return hooked.join(session, frame, now, wall, admitted)
    return _admitted_join(session, frame, token, recover, wall)


def _admitted_join(
    session: Context,
    frame: f.Join,
    token: ChannelToken | None,
    recover: Position | None,
    wall: float,
    info: Any = None,
) -> Result | Deferred:
    """A join its permission admitted (``info``: the join hook's for the member)."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    if frame.channel not in member.channels:
        access.enter(session, frame.channel, token, info)
    broker = app.broker
    retention = app.retention(frame.channel)
    if broker.shared and retention is not None and frame.channel not in member.channels:
        return history.join_shared(session, frame, recover, retention)
    joined = app.join(member, frame.channel, wants_echo(session, frame.echo))
    if joined and broker.shared:
        # Answer once this node receives the channel's messages (none published after
        # the ok can be missed) and the cluster lists the member; refused, it is no member.
        name, channel, conn = app.name, frame.channel, session.conn_id
        undo = leaving(session, channel)
        return Deferred(frame.id, lambda: broker.joined(name, channel, conn), _joined, undo=undo)
    if recover is None and app.retention(frame.channel) is None:
        return {"joined": joined}
    return {"joined": joined, **history.position(session, frame.channel, joined, recover, wall)}


def leaving(session: Context, channel: str) -> Callable[[], object]:
    """Takes back a join whose answer is ``broker_unavailable`` (its member leaves again)."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    return lambda: app.leave(member, channel, echo=False)


def leave(session: Context, frame: f.Leave, now: float, wall: float) -> Result:
    assert session.app is not None and session.member is not None
    check_channel(frame.channel)
    left = session.app.leave(session.member, frame.channel, wants_echo(session, frame.echo))
    return {"left": left}


def members(session: Context, frame: f.GetMembers, now: float, wall: float) -> Result | Deferred:
    app = session.app
    assert app is not None
    check_channel(frame.channel)
    access.enforce(session, "presence", frame.channel)
    limit = DEFAULT_MEMBERS_PAGE if frame.limit is None else frame.limit
    if not 1 <= limit <= session.limits.max_members_page:
        raise refuse(
            ErrorCode.BAD_REQUEST,
            f"members: 'limit' must be from 1 to {session.limits.max_members_page}",
        )
    broker = app.broker
    if broker.shared:
        name, channel, after = app.name, frame.channel, frame.after
        return Deferred(frame.id, lambda: broker.members(name, channel, after, limit), _listing)
    page, cursor = app.table.page(frame.channel, frame.after, limit)
    return {"members": [m.info(frame.channel) for m in page], "next": cursor}


def profile(session: Context, frame: f.UpdateProfile, now: float, wall: float) -> Result:
    assert session.app is not None and session.member is not None
    check_profile(frame.data, "data", session.limits.max_profile_bytes)
    channels = session.app.update_profile(
        session.member, frame.data, wants_echo(session, frame.echo)
    )
    return {"channels": channels}


def send(session: Context, frame: f.Send, now: float, wall: float) -> Result | Deferred:
    app, member = session.app, session.member
    assert app is not None and member is not None
    check_channel(frame.channel)
    check_event(frame.event)
    check_value(frame.data, "data")
    settings = app.settings
    if not settings.allow_client_send:
        raise refuse(ErrorCode.FORBIDDEN, f"app {app.name!r} does not allow client sends")
    ask = access.enforce(session, "send", frame.channel)
    if frame.channel not in member.channels:
        raise refuse(ErrorCode.NOT_MEMBER, f"join {frame.channel!r} before sending to it")
    if ask:  # the app's publish hook decides, and may rewrite the data

        def admitted(data: Any, wall: float) -> Result | Deferred:
            return _deliver(session, frame, data, wall)

        return hooked.send(session, frame, admitted)
    return _deliver(session, frame, frame.data, wall)


def _deliver(session: Context, frame: f.Send, data: Any, wall: float) -> Result | Deferred:
    """Send an admitted message; the reply waits for its place in the history if shared."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    sent = app.send(
        frame.channel,
        frame.event,
        data,
        wall=wall,
        sender=member,
        echo=wants_echo(session, frame.echo),
    )
    reply: Result = {"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients}
    if sent.sequenced is not None:  # the cluster's place for it: the ok waits for it

        def placed(position: Position | None, now: float, wall: float) -> Result:
            if position is None:
                raise refuse(
                    ErrorCode.OUTCOME_UNKNOWN,
                    "Redis restarted while the message was on its way; whether it was "
                    "published is unknown (it may have reached some members)",
                )
            _told(session, frame, data, sent.mid)  # published: only now (a refusal is none)
            return {**reply, **position.to_wire()}

        return Deferred(frame.id, sent.sequenced, placed, bounded=True)
    _told(session, frame, data, sent.mid)
    return reply if sent.position is None else {**reply, **sent.position.to_wire()}


def _told(session: Context, frame: f.Send, data: Any, mid: str) -> None:
    """The app's webhooks hear of a published client message (``client_message``)."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    if app.events.wants("client_message", frame.channel):
        app.events.emit(
            "client_message",
            {
                "channel": frame.channel,
                "event": frame.event,
                "data": data,
                "user": member.user,
                "conn": member.id,
                "mid": mid,
            },
        )


def refresh(session: Context, frame: f.Refresh, now: float, wall: float) -> Result:
    """A fresh token for the same user: the connection lives on past the old one, under
    its grants. With ``ch``: a fresh channel token for that channel."""
    app = session.app
    assert app is not None and session.member is not None
    if frame.channel is not None:
        return access.refresh_channel(session, frame, wall)
    settings = app.settings.session
    if settings is None:
        raise refuse(ErrorCode.FORBIDDEN, f"app {app.name!r} takes no session tokens")
    try:
        principal = verify_session(settings, frame.token, wall)
    except CredentialError as exc:
        raise refuse(ErrorCode.INVALID_TOKEN, exc.message) from None
    if session.principal is None or principal.user != session.principal.user:
        raise refuse(
            ErrorCode.FORBIDDEN,
            "a refresh must be for the connection's own user (to sign in, reconnect)",
        )
    if app.session_ended(principal.user, principal.session, now):
        raise refuse(ErrorCode.INVALID_TOKEN, "that session was ended; sign in again")
    app.table.set_session(session.member, principal.session)
    session.principal = principal
    access.recheck(session, list(session.member.channels))
    expires = None if principal.expires is None else int(principal.expires * 1000)
    return {"expires": expires}


def broadcast(session: Context, frame: f.Broadcast, now: float, wall: float) -> Result:
    app = session.app
    assert app is not None and session.member is not None
    check_event(frame.event)
    check_value(frame.data, "data")
    if not app.settings.allow_client_broadcast:
        raise refuse(ErrorCode.FORBIDDEN, f"app {app.name!r} does not allow client broadcasts")
    sent = app.broadcast(
        frame.event,
        frame.data,
        wall=wall,
        sender=session.member,
        echo=wants_echo(session, frame.echo),
    )
    return {"mid": sent.mid, "ts": sent.ts, "recipients": sent.recipients}


def _joined(value: object, now: float, wall: float) -> Result:
    return {"joined": True}


def _listing(value: tuple[list[Any], int | None], now: float, wall: float) -> Result:
    """A page of the cluster's members: ``(infos, next cursor)`` from the broker."""
    infos, cursor = value
    return {"members": infos, "next": cursor}
