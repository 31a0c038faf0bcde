"""Frame types of protocol version 1 (protocol.md §3 and §5).

Each class is one msgpack map on the wire; ``TYPE`` is its ``t`` value. Client frames are
what a client sends (decoded by the server); server frames are what the server sends (decoded
by the client library). Fields use Python names here; protocol.md gives the wire keys.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

PROTOCOL_VERSION = 1
FEATURES = ("presence_diffs", "history")
"""Optional features of version 1 a client may ask for in its hello (protocol.md §8).
``history`` only tells a client that the server speaks channel history (§4.11): it adds
optional keys and a request type, which are there whether asked for or not."""


# --- client -> server -------------------------------------------------------------------


@attrs.frozen
class Hello:
    """First frame of every connection: credentials, initial profile, options."""

    TYPE: ClassVar[str] = "hello"
    version: int
    app: str | None = None
    """The app (tenant) to connect to; ``None`` means the server's default app."""
    key: str | None = None
    """The app's client API key."""
    token: str | None = None
    """A session token identifying the signed-in user."""
    profile: Any = None
    """Initial member profile shown to other channel members."""
    echo: bool = True
    """Default for whether this connection receives its own sends and presence events."""
    features: tuple[str, ...] = ()
    """Optional protocol features the client speaks (protocol.md §8): ``presence_diffs``.
    Names the server does not know are ignored."""
    data: Any = None
    """For the app's connect hook (docs/hooks.md): passed to it as is."""


@attrs.frozen
class Join:
    TYPE: ClassVar[str] = "join"
    id: int
    channel: str
    echo: bool | None = None
    recover: dict[str, Any] | None = None
    """``{"epoch": str, "offset": uint}``: the last message of the channel this client
    received; the server replays what followed it (protocol.md §4.4.1)."""
    token: str | None = None
    """A channel token for this channel (protocol.md §4.4.2)."""
    data: Any = None
    """For the app's join hook (docs/hooks.md): passed to it as is."""


@attrs.frozen
class Leave:
    TYPE: ClassVar[str] = "leave"
    id: int
    channel: str
    echo: bool | None = None


@attrs.frozen
class GetMembers:
    TYPE: ClassVar[str] = "members"
    id: int
    channel: str
    after: int | None = None
    """Page cursor: the ``next`` value of the previous page."""
    limit: int | None = None


@attrs.frozen
class UpdateProfile:
    TYPE: ClassVar[str] = "profile"
    id: int
    data: Any
    echo: bool | None = None


@attrs.frozen
class Send:
    TYPE: ClassVar[str] = "send"
    id: int
    channel: str
    event: str
    data: Any = None
    echo: bool | None = None


@attrs.frozen
class Broadcast:
    TYPE: ClassVar[str] = "broadcast"
    id: int
    event: str
    data: Any = None
    echo: bool | None = None


@attrs.frozen
class History:
    """A page of a channel's history (protocol.md §4.11)."""

    TYPE: ClassVar[str] = "history"
    id: int
    channel: str
    since: dict[str, Any] | None = None
    """``{"epoch", "offset"}``: start after (forward) or before (reverse) this message."""
    limit: int | None = None
    reverse: bool | None = None
    """Newest first (absent: false)."""


@attrs.frozen
class Refresh:
    """A fresh session token for the connection's user (before the old one expires)."""

    TYPE: ClassVar[str] = "refresh"
    id: int
    token: str
    channel: str | None = None
    """With a channel: a fresh channel token for that channel (protocol.md §4.4.2), not a
    session token."""


Request = Join | Leave | GetMembers | UpdateProfile | Send | Broadcast | Refresh | History
ClientFrame = Hello | Request


# --- server -> client -------------------------------------------------------------------


@attrs.frozen
class Welcome:
    """The server's answer to a valid ``hello``."""

    TYPE: ClassVar[str] = "welcome"
    version: int
    conn: str
    """This connection's id: its member id in every channel."""
    time: int
    """Server wall-clock time, milliseconds since the Unix epoch."""
    heartbeat: int
    """Ping interval in milliseconds; a peer silent for two intervals is closed."""
    limits: dict[str, int]
    user: str | None = None
    features: tuple[str, ...] | None = None
    """The hello's features the server enabled for this connection (absent: none)."""


@attrs.frozen
class Ok:
    TYPE: ClassVar[str] = "ok"
    id: int
    data: Any = None


@attrs.frozen
class Err:
    TYPE: ClassVar[str] = "err"
    id: int | None
    code: str
    message: str
    limiter: str | None = None
    """For ``rate_limited``: the name of the first limiter that refused."""
    retry_after: int | None = None
    """For ``rate_limited``: milliseconds until the operation would be admitted."""


@attrs.frozen
class Msg:
    """An app event delivered to a channel's members (or to everyone, for a broadcast)."""

    TYPE: ClassVar[str] = "msg"
    channel: str | None
    event: str
    data: Any
    sender: str | None
    """Member id of the sending connection; ``None`` when the host app or backend sent it."""
    ts: int
    mid: str
    offset: int | None = None
    """Its position in the channel's stream, for a channel with history (protocol.md §5.1)."""
    epoch: str | None = None
    """The stream's epoch, for a channel with history."""


@attrs.frozen
class MemberEvent:
    """Presence: a member joined, left, or updated its profile in a channel."""

    TYPES: ClassVar[tuple[str, ...]] = ("member_join", "member_leave", "member_update")
    kind: str
    channel: str
    member: dict[str, Any]
    """``{"id": conn id, "user": user id or None, "data": profile}``."""
    first: bool | None = None
    """On join: this is the user's first connection in the channel."""
    last: bool | None = None
    """On leave: this was the user's last connection in the channel."""


@attrs.frozen
class PresenceDiff:
    """Presence, batched (the ``presence_diffs`` feature): a channel's joins, leaves and
    profile updates since the previous such frame, folded per member (protocol.md §5.2.1).

    Each entry is a member map ``{"id", "user", "data"}``; join entries also carry ``first``
    and leave entries ``last``. Clients apply leaves, then joins, then updates.
    """

    TYPE: ClassVar[str] = "presence"
    channel: str
    joins: list[dict[str, Any]] | None = None
    leaves: list[dict[str, Any]] | None = None
    updates: list[dict[str, Any]] | None = None


@attrs.frozen
class PresencePaused:
    """Per-member presence events (``member_*``) of a channel are paused for this
    connection: the channel has more members than its rule's ``member_events_max``
    (protocol.md §5.2.2). Only connections without ``presence_diffs`` receive it; until a
    :class:`PresenceResumed` for the channel, they get no ``member_*`` frame for it, so a
    member list kept from those frames is no longer up to date."""

    TYPE: ClassVar[str] = "presence_paused"
    channel: str
    members: int
    """The channel's member count when the events were paused (or at this member's join)."""
    max: int
    """The channel's ``member_events_max``: events resume at half of it (at least 1)."""


@attrs.frozen
class PresenceResumed:
    """Per-member presence events of a channel resume for this connection (protocol.md
    §5.2.2): the ``member_*`` frames that follow are complete again, but what happened while
    they were paused is not sent: list the channel's members (``members``) again."""

    TYPE: ClassVar[str] = "presence_resumed"
    channel: str
    members: int
    """The channel's member count when the events resumed."""


@attrs.frozen
class UserEvent:
    """An event about the connection's own user (sign-in, sign-out, ...), from the backend."""

    TYPE: ClassVar[str] = "user"
    kind: str
    """``signin``, ``signout``, ``profile_update``, ``password_change``, ``email_change``,
    ``phone_change``, or another name the app's backend uses."""
    session: dict[str, Any] | None
    """The session it concerns: ``{"id": ..., other public fields}`` (never a token)."""
    user: dict[str, Any] | None
    """The user's public fields, as the backend gave them."""
    ts: int


@attrs.frozen
class Left:
    """The server took this connection out of a channel it had joined (protocol.md §5.6).

    The connection stays open; the client must not rejoin the channel on its own (it may join
    again when it has what the reason says is missing, e.g. a fresh channel token)."""

    TYPE: ClassVar[str] = "left"
    channel: str
    reason: str
    """Why: one of :data:`LEFT_REASONS`."""
    message: str
    """A human-readable explanation."""


LEFT_REASONS = ("token_expired", "grant_revoked", "removed")
"""``token_expired``: the channel token that admitted it expired without a refresh;
``grant_revoked``: a refreshed session token no longer grants the channel; ``removed``: the
app's backend took the user (or connection) out of the channel."""


@attrs.frozen
class Joined:
    """The server put this connection into a channel (protocol.md §5.7): the app's backend
    added it (server API), or its session token's ``subscribe`` claim lists the channel.

    The connection is a member as if it had joined; the server, not the client, puts it back
    after a reconnect (§5.7), so a client does not rejoin such a channel on its own."""

    TYPE: ClassVar[str] = "joined"
    channel: str
    reason: str
    """Why: one of :data:`JOINED_REASONS`."""
    epoch: str | None = None
    """For a channel with history: its stream's epoch..."""
    offset: int | None = None
    """...and the offset of its last message at the join (the client's position)."""


JOINED_REASONS = ("added", "subscribe")
"""``added``: the app's backend put the user (or connection) in; ``subscribe``: the session
token's ``subscribe`` claim lists the channel."""


@attrs.frozen
class Gap:
    """Messages of a channel (``channel``; None: broadcasts) may have been sent that this
    connection did not receive: a node could not reach the broker (protocol.md §5.5)."""

    TYPE: ClassVar[str] = "gap"
    channel: str | None
    reason: str
    """``broker_outage``."""


ServerFrame = (
    Welcome
    | Ok
    | Err
    | Msg
    | MemberEvent
    | PresenceDiff
    | PresencePaused
    | PresenceResumed
    | UserEvent
    | Left
    | Joined
    | Gap
)
Frame = ClientFrame | ServerFrame
