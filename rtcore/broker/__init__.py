"""Brokers: how a publication reaches its recipients, on this node and the others.

A :class:`Publication` is one framed message for one *target* of an app -- a channel, the
channel members who may see its presence, every connection of the app, a user's connections,
or one session of a user's -- plus the member not to deliver it to (a sender without echo).
An :class:`~rtcore.app.App` hands every message it publishes to its broker and never touches
another connection's outbox itself; that is the seam where a networked broker slots in
without changing the session code.

:class:`MemoryBroker`, the default, is a single node (``shared`` is false): it delivers at
once, in the caller's stack, to the node's channel table with :func:`deliver_local`, and the
app keeps presence, revocations and limiter buckets in process.

A *shared* broker (``rtcore.server.redis_broker.RedisBroker``: ``[broker] kind = "redis"``)
makes every node one server. Then the app also hands it presence (``presence``: the cluster
computes ``first``/``last`` and tells every node), the channels this node has members in
(``want``/``unwant``: what it subscribes to), ended sessions (``revoke``) and control
operations of the server API (``control``), and requests whose answer is the cluster's
(member listings, shared rate limits) are answered asynchronously (``rtcore.session``'s
:class:`~rtcore.session.Deferred`). Every node, the publishing one included, delivers channel
messages and broadcasts as they come back from the broker: one order for all.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import attrs

from rtcore.history import HistoryStore, MemoryHistory
from rtcore.hub import ChannelTable, Member
from rtcore.limiter import Refusal, Rule
from rtcore.protocol.errors import LocalProtocolError, RtcoreError


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
        """Where channel history is kept (rtcore.history): the broker owns a publication's
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


class MemoryBroker:
    """A broker for one process: publications are delivered at once to the local tables."""

    shared = False

    def __init__(self, history: MemoryHistory | None = None) -> None:
        self._tables: dict[str, ChannelTable] = {}
        self.history: MemoryHistory = history if history is not None else MemoryHistory()

    def register(self, app: str, table: ChannelTable, receiver: Any = None) -> None:
        self._tables[app] = table

    # Only a shared broker is asked these (App checks ``shared``): here they are our bug.
    def presence(self, app: str, kind: str, channel: str, member: Member, skip: str | None) -> None:
        raise LocalProtocolError("the memory broker keeps no cluster presence")

    def want(self, app: str, channel: str) -> None:
        raise LocalProtocolError("the memory broker subscribes to nothing")

    def unwant(self, app: str, channel: str) -> None:
        raise LocalProtocolError("the memory broker subscribes to nothing")

    def control(self, app: str, op: str, args: Any) -> None:
        raise LocalProtocolError("the memory broker has no other nodes")

    def revoke(self, app: str, user: str, session: str, until: float) -> None:
        raise LocalProtocolError("the memory broker has no other nodes")

    def joined(self, app: str, channel: str, conn: str) -> Awaitable[None]:
        raise LocalProtocolError("the memory broker subscribes to nothing")

    def take(self, app: str, client_key: str, rules: list[Rule]) -> Awaitable[Refusal | None]:
        raise LocalProtocolError("the memory broker's buckets are the app's limiter's")

    def members(
        self, app: str, channel: str, after: int | None, limit: int
    ) -> Awaitable[tuple[list[Any], int | None]]:
        raise LocalProtocolError("the memory broker's members are the channel table's")

    def publish(self, publication: Publication) -> int:
        return deliver_local(self._tables[publication.app], publication)

    def health(self) -> str | None:
        return None  # in process: always able to deliver
