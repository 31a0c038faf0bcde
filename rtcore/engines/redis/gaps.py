"""Telling members what they may have missed while a node could not reach Redis: a part of
:class:`RedisBroker` (protocol.md §5.5).

While Redis is away a node delivers messages of channels without history to its own
members only. When it is back, its members of those channels (and of broadcasts) may have
missed what other nodes' members sent meanwhile, and the other nodes' members missed what
this node's sent locally: each is told with a ``gap`` frame -- this node's members at once,
the other nodes' by a ``gap`` control message naming the channels that had local-only
messages. Channels with history need none: their sends are refused while Redis is away,
and a node back fills its members' gap from the stream.
"""

from __future__ import annotations

from typing import Any

from rtcore.core.app import framed
from rtcore.engines.base import Publication, Target, deliver_local
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.ops import BrokerCore
from rtcore.protocol import frames as f

REASON = "broker_outage"


class GapMixin(BrokerCore):
    """Gap signals of :class:`RedisBroker`, and their state."""

    def _init_gaps(self) -> None:
        self._island: dict[str, set[str | None]] = {}
        """Per app: channels (None: broadcasts) with messages delivered here only."""

    def _island_sent(self, publication: Publication) -> None:
        """``publication`` reached this node's members only (Redis away, or its write lost
        with the link): the other nodes' members will be told."""
        name = publication.name if publication.target is Target.CHANNEL else None
        self._island.setdefault(publication.app, set()).add(name)

    def _tell_gaps(self) -> None:
        """After a reconnection: this node's members of channels without history, and every
        connection for broadcasts, get a ``gap``; the other nodes are told which channels
        had messages only here."""
        island, self._island = self._island, {}
        for app, table in self._tables.items():
            retention = self._apps[app].retention
            for channel in [None, *(c for c in table.channels() if retention(c) is None)]:
                self._deliver_gap(app, channel)
            sent = island.get(app)
            if sent:
                self.control(app, "gap", sorted(sent, key=lambda c: (c is not None, c or "")))
        self._poke()

    def _gap_control(self, app: str, channels: Any) -> None:
        """Another node's members sent messages these channels' members here missed."""
        if not isinstance(channels, list | tuple):
            raise rp.BadEnvelope("a gap control carries a list of channels")
        for channel in channels:
            if channel is None or isinstance(channel, str):
                self._deliver_gap(app, channel)
        self._poke()

    def _deliver_gap(self, app: str, channel: str | None) -> None:
        target = Target.APP if channel is None else Target.CHANNEL
        frame = framed(f.Gap(channel, REASON))
        deliver_local(self._tables[app], Publication(app, target, channel, frame))

    def control(self, app: str, op: str, args: Any) -> None:
        raise NotImplementedError
