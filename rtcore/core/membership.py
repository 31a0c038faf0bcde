"""Server-side membership (sans-IO): the app's backend, or a session token's ``subscribe``
claim, puts connections into channels (protocol.md §5.7), and takes them out (§5.6).

Theory of operation: an add joins the connection as a ``join`` request would -- the channel's
members hear a ``member_join`` -- without the channel rules' join check (the backend decided),
but within ``max_channels``; the connection gets a ``joined`` frame, with the channel's
position for a channel with history. An add for a user (not one connection) is also
remembered, in the app's :class:`rtcore.core.server_channels.ServerChannels` (bounded), so
that the user's later connections -- a reconnect included -- are put back at hello; a
remove forgets it. With a shared broker every node applies the add or remove to its own
connections and remembers it too.
"""

from __future__ import annotations

from rtcore.core.app import App
from rtcore.core.members import Member
from rtcore.core.permissions import HOOK
from rtcore.protocol import frames as f

ADDED, ALREADY, FULL = "added", "already", "full"
"""What an add did to one connection."""


def add(app: App, member: Member, channel: str, reason: str, max_channels: int, wall: float) -> str:
    """Put ``member`` into ``channel`` (``reason``: ``added`` or ``subscribe``); returns
    :data:`ADDED`, :data:`ALREADY` (a member already: nothing sent) or :data:`FULL` (it is in
    ``max_channels`` channels: not added, and told with a ``left`` frame, reason
    ``removed``)."""
    if channel in member.channels:
        return ALREADY
    if len(member.channels) >= max_channels:
        message = f"not added to {channel!r}: the connection is in {max_channels} channels"
        app.tell(member, f.Left(channel, "removed", message))
        return FULL
    if app.settings.presence_policy(channel) == HOOK:  # the channel's members see presence
        member.watch(channel, True)
    app.join(member, channel, member.echo)
    epoch, offset = _position(app, channel, wall)
    app.tell(member, f.Joined(channel, reason, epoch, offset))
    app.member_events.replied(member)  # a paused channel's notice follows (§5.2.2)
    return ADDED


def _position(app: App, channel: str, wall: float) -> tuple[str | None, int | None]:
    """The channel's top, for a channel with history whose stream this node holds (with a
    shared broker the stream is in Redis, read asynchronously: no position, protocol.md
    §5.7)."""
    if app.broker.shared or app.retention(channel) is None:
        return None, None
    top = app.history(channel, None, 0, True, wall).top
    return top.epoch, top.offset


def restore(
    app: App, member: Member, subscribe: tuple[str, ...], max_channels: int, wall: float
) -> None:
    """At hello: the channels of the token's ``subscribe`` claim, then those the backend
    put the user into (protocol.md §3.4, §5.7)."""
    for channel in subscribe:
        add(app, member, channel, "subscribe", max_channels, wall)
    if member.user is not None:
        for channel in app.server_channels.of(member.user):
            add(app, member, channel, "added", max_channels, wall)
