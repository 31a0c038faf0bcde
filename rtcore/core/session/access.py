"""A connection's channel permissions (sans-IO): each request's check through the one decision
(:func:`rtcore.core.permissions.decide`), the channel tokens the connection holds, and what a
refresh or the clock does to its channels (protocol.md §4.1, §4.4.2, §5.6).

A channel token is held from the join that carried it until the connection leaves the
channel; it must be refreshed (``refresh`` with ``ch``) before its ``exp`` (plus the app's
leeway), else :func:`expire` removes the connection from the channel (``left``,
``token_expired``). A refresh -- of the session token (new grants) or of a channel token --
decides each affected channel again: a connection its new rights no longer admit is removed
(``left``, ``grant_revoked``); its right to see presence follows.

A rule value ``hook`` (docs/hooks.md) makes a join's or a send's permission "ask the app's
hook": :func:`admit_join` and :func:`enforce` say so and the request handler asks it
(rtcore.core.session.hooked). A refresh does not ask again: the hook's answer stands for
as long as the connection stays in the channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rtcore import observe
from rtcore.core.channel_tokens import verify_channel_token
from rtcore.core.members import per_connection
from rtcore.core.permissions import (
    NO_GRANTS,
    ChannelToken,
    Decision,
    Refusal,
    Subject,
    check_listed,
    decide,
)
from rtcore.core.session.context import Context, Result
from rtcore.protocol import ErrorCode, RemoteProtocolError
from rtcore.protocol import frames as f
from rtcore.protocol.names import check_channel, refuse


def subject(
    session: Context, channel: str, token: ChannelToken | None = None, entering: bool = False
) -> Subject:
    """Who asks, for ``channel``: the user, the session token's grants, the channel token
    (``token``, else the one the connection holds there), whether it is in the channel
    (or ``entering`` it: its join was admitted)."""
    principal = session.principal
    held = token if token is not None else session.channel_tokens.get(channel)
    member = entering or (session.member is not None and channel in session.member.channels)
    if principal is None:
        return Subject(None, NO_GRANTS, held, member)
    return Subject(principal.user, principal.grants, held, member)


def verdict(
    session: Context,
    op: str,
    channel: str,
    token: ChannelToken | None = None,
    entering: bool = False,
) -> Decision:
    """The channel rules' answer to ``op`` in ``channel`` for this connection: None
    (allowed), a refusal, or ``ASK_HOOK``."""
    assert session.app is not None
    value, user_limited = session.app.settings.permission(channel, op)
    who = subject(session, channel, token, entering)
    if user_limited:
        refusal = check_listed(op, channel, who.user)
        if refusal is not None:
            return refusal
    return decide(value, op, channel, who)


def allows(session: Context, op: str, channel: str, entering: bool = False) -> bool:
    return verdict(session, op, channel, entering=entering) is None


def enforce(session: Context, op: str, channel: str, token: ChannelToken | None = None) -> bool:
    """Refuse (an ``err`` reply, counted by operation and reason) unless allowed; True:
    allowed if the app's hook allows it (a rule value ``hook``)."""
    decision = verdict(session, op, channel, token)
    if isinstance(decision, Refusal):
        assert session.app is not None
        observe.permission_refused(session.app, op, decision.reason)
        raise refuse(decision.code, decision.message)
    return decision is not None


def admit_join(session: Context, frame: f.Join, wall: float) -> tuple[ChannelToken | None, bool]:
    """A join's permission: its channel token verified (when it carries one), then the
    rules; returns the token, and whether the app's join hook must be asked."""
    assert session.member is not None
    if frame.channel not in session.member.channels:  # a join that did not complete left it
        _drop(session, frame.channel)
    token = None if frame.token is None else _verified(session, frame.channel, frame.token, wall)
    ask = enforce(session, "join", frame.channel, token)
    return token, ask


def enter(session: Context, channel: str, token: ChannelToken | None, info: Any = None) -> None:
    """Before the join itself: the token held there, the member's ``info`` (the join
    hook's, else the token's), and whether the member sees the channel's presence (so the
    join's presence event carries them)."""
    member = session.member
    assert member is not None
    if token is not None:
        _hold(session, channel, token)
        if info is None:
            info = token.info
    member.set_info(channel, info)  # (None: clears what a join that did not complete left)
    member.watch(channel, _sees(session, channel, token, entering=True))


def _sees(
    session: Context, channel: str, token: ChannelToken | None = None, entering: bool = False
) -> bool:
    """Whether the connection sees ``channel``'s presence, where that is decided per
    connection (``Member.watching``); False under the other values, which do not read it (so
    a plain join leaves the member's shared empty set alone: 216 bytes per connection)."""
    assert session.app is not None
    if not per_connection(session.app.settings.presence_policy(channel)):
        return False
    return verdict(session, "presence", channel, token, entering=entering) is None


def recheck(session: Context, channels: list[str]) -> None:
    """Decide ``channels`` again after a refresh: leave those the connection may no longer
    join (``left``, ``grant_revoked``); the right to see presence follows the new rights."""
    app, member = session.app, session.member
    assert app is not None and member is not None
    for channel in channels:
        if channel not in member.channels:
            continue
        refusal = verdict(session, "join", channel)
        if not isinstance(refusal, Refusal):  # (a hook's answer stands: not asked again)
            app.table.rewatch(member, channel, _sees(session, channel))
            continue
        _drop(session, channel)
        app.remove(member, channel, "grant_revoked", f"{refusal.message} (after a refresh)")


def refresh_channel(session: Context, frame: f.Refresh, wall: float) -> Result:
    """A fresh channel token for a channel the connection is in (protocol.md §4.4.2)."""
    channel, member = frame.channel, session.member
    assert channel is not None and member is not None
    check_channel(channel)
    if channel not in member.channels:
        raise refuse(ErrorCode.NOT_MEMBER, f"refresh of {channel!r}: join it first")
    token = _verified(session, channel, frame.token, wall)
    _hold(session, channel, token)
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
            _drop(session, channel)
        elif wall > token.expires + leeway:
            _drop(session, channel)
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


NO_TOKENS: Mapping[str, ChannelToken] = MappingProxyType({})
"""A session's channel tokens until it holds one (shared: an empty dict per connection is 64
bytes, and most never hold a token); :func:`_hold` gives it a table of its own."""


def _hold(session: Context, channel: str, token: ChannelToken) -> None:
    session.channel_tokens = {**session.channel_tokens, channel: token}


def _drop(session: Context, channel: str) -> None:
    if channel in session.channel_tokens:
        rest = {k: v for k, v in session.channel_tokens.items() if k != channel}
        session.channel_tokens = rest or NO_TOKENS
