"""Brokers: how a publication reaches its recipients, on this node and the others.

A :class:`Publication` is one framed message for one *target* of an app -- a channel, the
channel members who may see its presence, every connection of the app, a user's connections,
or one session of a user's -- plus the member not to deliver it to (a sender without echo).
An :class:`~rtcore.core.app.App` hands every message it publishes to its broker and never touches
another connection's outbox itself; that is the seam where a networked broker slots in
without changing the session code.

:class:`MemoryBroker`, the default, is a single node (``shared`` is false): it delivers at
once, in the caller's stack, to the node's channel table with :func:`deliver_local`, and the
app keeps presence, revocations and limiter buckets in process.

A *shared* broker (``rtcore.engines.redis.broker.RedisBroker``: ``[broker] kind = "redis"``)
makes every node one server. Then the app also hands it presence (``presence``: the cluster
computes ``first``/``last`` and tells every node), the channels this node has members in
(``want``/``unwant``: what it subscribes to), ended sessions (``revoke``) and control
operations of the server API (``control``), and requests whose answer is the cluster's
(member listings, shared rate limits) are answered asynchronously
(:class:`~rtcore.core.session.deferred.Deferred`). Every node, the publishing one included,
delivers channel messages and broadcasts as they come back from the broker: one order for all.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from rtcore.core.history import Entry, HistoryStore, Retention, Slice
from rtcore.core.limits.limiter import Refusal, Rule
from rtcore.core.members import ChannelTable, Member
from rtcore.protocol.errors import RtcoreError
from rtcore.protocol.frames import Msg
from rtcore.protocol.position import Position


class BrokerUnavailable(RtcoreError):
    """The broker cannot answer now (Redis unreachable or too slow): the request that needed
    it is answered ``broker_unavailable`` (protocol.md §6), never left hanging."""


class Target(enum.Enum):
    CHANNEL = "channel"
    """The channel's members (messages)."""
    PRESENCE = "presence"
    """The channel's members who may see its presence (the app's channel rules) and take it
    as one ``member_*`` frame per event."""
    PRESENCE_DIFFS = "presence_diffs"
    """The channel's members who may see its presence and take it as batched diffs."""
    APP = "app"
    USER = "user"
    SESSION = "session"
    """One session of one user: ``name`` is the session id, ``user`` its user."""


@attrs.frozen
class Publication:
    """One framed message for one target of one app."""

    app: str
    target: Target
    name: str | None
    """The channel, user or session name (None for the whole app)."""
    data: bytes
    """The WebSocket-framed message: the same bytes for every recipient on every node."""
    skip: str | None = None
    """The member id that must not receive it (the sender, when echo is off)."""
    user: str | None = None
    """For a SESSION target, the user whose session ``name`` is."""


class Broker(Protocol):
    """What an app needs from a broker."""

    shared: bool
    """Whether presence, revocations and limits are the cluster's (see the module doc)."""

    @property
    def history(self) -> HistoryStore:
        """Where channel history is kept (rtcore.core.history): the broker owns a publication's
        position (offset, epoch), so that every node sees one order."""

    def register(self, app: str, table: ChannelTable, receiver: Any = None) -> None:
        """The local channel table of ``app`` (on this node); a shared broker also takes the
        app itself (``receiver``), to hand it what arrives from other nodes."""

    def publish(self, publication: Publication) -> int:
        """Deliver ``publication`` to its recipients; returns how many are on this node.

        Must not block: a networked broker queues what it forwards (bounded).
        """

    def presence(self, app: str, kind: str, channel: str, member: Member, skip: str | None) -> None:
        """(Shared) record a join, leave or profile update in the cluster's presence, which
        tells every node (``App.presence_event``)."""

    def want(self, app: str, channel: str) -> None:
        """(Shared) this node has members in ``channel`` now: subscribe to it."""

    def unwant(self, app: str, channel: str) -> None:
        """(Shared) this node's last member of ``channel`` left: unsubscribe."""

    def control(self, app: str, op: str, args: Any) -> None:
        """(Shared) have every other node apply a server-API operation to its connections."""

    def revoke(self, app: str, user: str, session: str, until: float) -> None:
        """(Shared) ``user``'s ``session`` is refused on every node until ``until`` (Unix
        time), including nodes that start later."""

    def joined(self, app: str, channel: str, conn: str) -> Awaitable[None]:
        """(Shared) done once this node receives ``channel``'s publications and the cluster
        lists connection ``conn`` as its member (at once while the broker is unreachable:
        the node then serves its own members only)."""

    def publish_history(
        self, app: str, channel: str, msg: Msg, retention: Retention, skip: str | None
    ) -> tuple[int, Callable[[], Awaitable[Position | None]]]:
        """(Shared) publish a message of a channel with history: the broker gives it its
        position (in the cluster's one order) as it publishes it; returns how many of its
        recipients are on this node, and a wait for its position."""

    def read_history(
        self,
        app: str,
        channel: str,
        since: Position | None,
        limit: int,
        reverse: bool,
        retention: Retention,
    ) -> Awaitable[Slice]:
        """(Shared) a slice of the channel's stream (as ``HistoryStore.read``)."""

    def prepare_join(
        self, app: str, channel: str, since: Position | None, limit: int, retention: Retention
    ) -> Awaitable[tuple[Slice, list[Entry]]]:
        """(Shared) before a history channel's join: subscribe, read after ``since``, and
        the live messages that arrived during the read (joined right after: no gap)."""

    def release(self, app: str, channel: str) -> None:
        """(Shared) a join ``prepare_join`` was for did not happen."""

    def catch_up(self, app: str, channel: str, member: Member, through: int) -> None:
        """(Shared) ``member`` joined with every message up to offset ``through``: live
        copies of those still in flight are not delivered to it again."""

    def take(self, app: str, client_key: str, rules: list[Rule]) -> Awaitable[Refusal | None]:
        """(Shared) a token from each of the client's cluster-wide buckets of ``rules``, or
        from none: None, or the refusal; raises :class:`BrokerUnavailable` when it cannot."""

    def members(
        self, app: str, channel: str, after: int | None, limit: int
    ) -> Awaitable[tuple[list[Any], int | None]]:
        """(Shared) a page of the cluster's members of ``channel``: their infos in join
        order and the next cursor; raises :class:`BrokerUnavailable` when it cannot."""

    def health(self) -> str | None:
        """Why the broker cannot deliver now (say, its Redis is unreachable), or None when
        it can. Read by ``GET /readyz`` and the ``rtcore_broker_up`` metric."""


def recipients(table: ChannelTable, publication: Publication) -> Mapping[str, Member]:
    """The members of ``table`` that ``publication`` is for (its skipped member included)."""
    group: Mapping[str, Member]
    if publication.target is Target.CHANNEL:
        group = table.members(publication.name or "")
    elif publication.target is Target.PRESENCE:
        group = table.presence_receivers(publication.name or "", diffs=False)
    elif publication.target is Target.PRESENCE_DIFFS:
        group = table.presence_receivers(publication.name or "", diffs=True)
    elif publication.target is Target.APP:
        group = table.everyone
    elif publication.target is Target.USER:
        group = table.user(publication.name or "")
    else:
        group = table.session(publication.user or "", publication.name or "")
    return group


def local_count(table: ChannelTable, publication: Publication) -> int:
    """How many members of ``table`` ``publication`` will reach (its ``recipients``)."""
    group = recipients(table, publication)
    skip = publication.skip
    return len(group) - (1 if skip is not None and skip in group else 0)


def deliver_local(table: ChannelTable, publication: Publication) -> int:
    """Queue a publication on the recipients in ``table``; returns how many."""
    group = recipients(table, publication)
    skip = group.get(publication.skip) if publication.skip is not None else None
    return table.deliver(group, publication.data, skip)
