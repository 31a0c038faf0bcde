"""A connection's channel permissions (sans-IO): each request's check through the one decision
(:func:`rtcore.core.permissions.decide`), the channel tokens the connection holds, and what a
refresh or the clock does to its channels (protocol.md §4.1, §4.4.2, §5.6).

A channel token is held from the join that carried it until the connection leaves the
channel; it must be refreshed (``refresh`` with ``ch``) before its ``exp`` (plus the app's
leeway), else :func:`expire` removes the connection from the channel (``left``,
``token_expired``). A refresh -- of the session token (new grants) or of a channel token --
decides each affected channel again: a connection its new rights no longer admit is removed
(``left``, ``grant_revoked``); its right to see presence follows.
"""

from __future__ import annotations

from rtcore import observe
from rtcore.core.channel_tokens import verify_channel_token
from rtcore.core.permissions import NO_GRANTS, ChannelToken, Refusal, Subject, check_listed, decide
from rtcore.core.session.context import Context, Result
from rtcore.protocol import ErrorCode, RemoteProtocolError
from rtcore.protocol import frames as f
from rtcore.protocol.names import check_channel, refuse


def subject(session: Context, channel: str, token: ChannelToken | None = None) -> Subject:
    """Who asks, for ``channel``: the user, the session token's grants, the channel token
    (``token``, else the one the connection holds there)."""
    principal = session.principal
    held = token if token is not None else session.channel_tokens.get(channel)
    if principal is None:
        return Subject(None, NO_GRANTS, held)
    return Subject(principal.user, principal.grants, held)


def verdict(
    session: Context, op: str, channel: str, token: ChannelToken | None = None
) -> Refusal | None:
    """The channel rules' answer to ``op`` in ``channel`` for this connection."""
    assert session.app is not None
    value, user_limited = session.app.settings.permission(channel, op)
    who = subject(session, channel, token)
    if user_limited:
        refusal = check_listed(op, channel, who.user)
        if refusal is not None:
            return refusal
    return decide(value, op, channel, who)


def allows(session: Context, op: str, channel: str) -> bool:
    return verdict(session, op, channel) is None


def enforce(session: Context, op: str, channel: str, token: ChannelToken | None = None) -> None:
    """Refuse (an ``err`` reply, counted by operation and reason) unless allowed."""
    refusal = verdict(session, op, channel, token)
    if refusal is not None:
        assert session.app is not None
        observe.permission_refused(session.app, op, refusal.reason)
        raise refuse(refusal.code, refusal.message)


def admit_join(session: Context, frame: f.Join, wall: float) -> ChannelToken | None:
    """A join's permission: its channel token verified (when it carries one), then the
    rules; returns the token."""
    assert session.member is not None
    if frame.channel not in session.member.channels:  # a join that did not complete left it
        session.channel_tokens.pop(frame.channel, None)
    token = None if frame.token is None else _verified(session, frame.channel, frame.token, wall)
    enforce(session, "join", frame.channel, token)
    return token


def enter(session: Context, channel: str, token: ChannelToken | None) -> None:
    """Before the join itself: the token held there, its ``info``, and whether the member
    sees the channel's presence (so the join's presence event carries them)."""
    member = session.member
    assert member is not None
    member.channel_info.pop(channel, None)  # (what a join that did not complete left)
    member.watching.discard(channel)
    if token is not None:
        session.channel_tokens[channel] = token
        if token.info is not None:
            member.channel_info[channel] = token.info
    if verdict(session, "presence", channel, token) is None:
        member.watching.add(channel)


def recheck(session: Context, channels: list[str]) -> None:
    """Decide ``channels`` again after a refresh: leave those the connection may no longer
    join (``left``, ``grant_revoked``); the right to see presence follows the new rights."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    for channel in channels:
        if channel not in member.channels:
            continue
        refusal = verdict(session, "join", channel)
        if refusal is None:
            app.table.rewatch(member, channel, allows(session, "presence", channel))
            continue
        session.channel_tokens.pop(channel, None)
        app.remove(member, channel, "grant_revoked", f"{refusal.message} (after a refresh)")


def refresh_channel(session: Context, frame: f.Refresh, wall: float) -> Result:
    """A fresh channel token for a channel the connection is in (protocol.md §4.4.2)."""
    channel, member = frame.channel, session.member
    assert channel is not None and member is not None
    check_channel(channel)
    if channel not in member.channels:
        raise refuse(ErrorCode.NOT_MEMBER, f"refresh of {channel!r}: join it first")
    token = _verified(session, channel, frame.token, wall)
    session.channel_tokens[channel] = token
    recheck(session, [channel])
    return {"expires": int(token.expires * 1000)}


def expire(session: Context, wall: float) -> None:
    """Remove the connection from each channel whose token expired (beyond the app's
    leeway) without a refresh (``left``, ``token_expired``)."""
    app, member = session.app, session.member
    if app is None or member is None or not session.channel_tokens:
        return
    leeway = app.settings.session.leeway if app.settings.session is not None else 0.0
    for channel, token in list(session.channel_tokens.items()):
        if channel not in member.channels:  # a join that did not complete
            del session.channel_tokens[channel]
        elif wall > token.expires + leeway:
            del session.channel_tokens[channel]
            message = f"the channel token for {channel!r} expired"
            app.remove(member, channel, "token_expired", message)


def _verified(session: Context, channel: str, token: str, wall: float) -> ChannelToken:
    app = session.app
    assert app is not None
    try:
        return verify_channel_token(
            app.settings.session,
            token,
            app=app.name,
            channel=channel,
            user=session.principal.user if session.principal is not None else None,
            wall=wall,
            max_info_bytes=session.limits.max_profile_bytes,
        )
    except RemoteProtocolError:
        observe.permission_refused(app, "join", "invalid_channel_token")
        raise
