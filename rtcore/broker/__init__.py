"""Brokers: how a publication reaches its recipients (sans-IO for the in-memory one).

A :class:`Publication` is one framed message for one *target* of an app -- a channel, the
channel members who may see its presence, every connection of the app, a user's connections,
or one session of a user's -- plus the member not to deliver
it to (a sender without echo). An :class:`~rtcore.app.App` hands every publication it makes
(messages, presence, user events) to its broker and never touches another connection's outbox
itself; that is the seam where a networked broker slots in without changing the session code.

:class:`MemoryBroker`, the default, is a single node: it delivers at once, in the caller's
stack, to the node's channel table with :func:`deliver_local`. A networked broker (the Redis
issue) implements the same :meth:`Broker.publish` by delivering locally and forwarding the
publication -- already encoded and framed -- to the other nodes, which call
:func:`deliver_local` on theirs. Member listings and first/last presence counts stay local in
this version: across nodes they need a shared presence store, which comes with that broker.
So do presence diffs: an app batches only the events of channels with local diff-taking
members, and publishes each batch when its node flushes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import attrs

from rtcore.history import HistoryStore, MemoryHistory
from rtcore.hub import ChannelTable, Member


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

    @property
    def history(self) -> HistoryStore:
        """Where channel history is kept (rtcore.history): the broker owns a publication's
        position (offset, epoch), so that every node sees one order."""

    def register(self, app: str, table: ChannelTable) -> None:
        """The local channel table of ``app`` (on this node)."""

    def publish(self, publication: Publication) -> int:
        """Deliver ``publication`` to its recipients; returns how many are on this node.

        Must not block: a networked broker queues what it forwards (bounded).
        """

    def health(self) -> str | None:
        """Why the broker cannot deliver now (say, its Redis is unreachable), or None when
        it can. Read by ``GET /readyz`` and the ``rtcore_broker_up`` metric."""


def deliver_local(table: ChannelTable, publication: Publication) -> int:
    """Queue a publication on the recipients in ``table``; returns how many."""
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
    skip = group.get(publication.skip) if publication.skip is not None else None
    return table.deliver(group, publication.data, skip)


class MemoryBroker:
    """A broker for one process: publications are delivered at once to the local tables."""

    def __init__(self, history: MemoryHistory | None = None) -> None:
        self._tables: dict[str, ChannelTable] = {}
        self.history: MemoryHistory = history if history is not None else MemoryHistory()

    def register(self, app: str, table: ChannelTable) -> None:
        self._tables[app] = table

    def publish(self, publication: Publication) -> int:
        return deliver_local(self._tables[publication.app], publication)

    def health(self) -> str | None:
        return None  # in process: always able to deliver
