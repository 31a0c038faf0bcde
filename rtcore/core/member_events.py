"""Per-member presence frames (``member_*``), paused in big channels (sans-IO).

Theory of operation: a connection without the ``presence_diffs`` feature (protocol.md §5.2)
gets one ``member_*`` frame per presence event of each of its channels, so N members joining
one channel cost N(N-1)/2 frames. Past a channel's ``member_events_max`` members those
connections get one ``presence_paused`` frame instead and nothing more for that channel;
once it is back to :func:`resume_level` members (half the limit: a channel hovering at the
limit does not flap) they get ``presence_resumed`` and the ``member_*`` frames again, and
re-list the channel's members (protocol.md §5.2.2). Connections taking diffs are not
concerned: their ``presence`` frame per window costs O(1) per member whatever the churn.

* :meth:`MemberEvents.publish` sees every presence event of a channel with ``member_*``
  receivers on this node, with the channel's member count after it (this node's, or the
  cluster's with the Redis broker), and decides: the event itself, a paused or resumed
  frame, or nothing (paused).
* A member joining a paused channel (its own join's event, or the join that pauses it) is
  told right after the reply to its join (:meth:`expect_reply` / :meth:`replied`), so it
  always learns of the pause after the ``ok`` (or the ``joined`` frame) that made it a member.

Invariants: a channel is in ``_paused`` only while this node has ``member_*`` receivers in
it; a receiver of a paused channel has had, since its join or the last ``presence_resumed``,
exactly one ``presence_paused`` for it and no ``member_*``; ``_awaiting`` holds only members
whose join's reply is not queued yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtcore.core.members import ChannelTable, Member
from rtcore.core.outbox import Pending
from rtcore.observe.events import AppStatistics
from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f

Info = dict[str, Any]
"""A member as clients see it: ``{"id", "user", "data"}`` (and ``info``)."""


def resume_level(limit: int) -> int:
    """The member count at or below which a paused channel's events resume: half the
    limit, at least 1."""
    return max(1, limit // 2)


def member_event(kind: str, channel: str, info: Info, flag: bool | None) -> f.MemberEvent:
    """A ``member_*`` frame; ``flag`` is ``first`` for a join, ``last`` for a leave."""
    first = flag if kind == "member_join" else None
    last = flag if kind == "member_leave" else None
    return f.MemberEvent(kind, channel, info, first=first, last=last)


def _framed(frame: f.ServerFrame) -> bytes:
    return wsframe.binary_frame(codec.encode(frame))


class MemberEvents:
    """An app's ``member_*`` fan-out and the channels where it is paused.

    Args:
        table: the app's channel table.
        pending: where queued outboxes are recorded for the flusher.
        statistics: the app's counters (presence deliveries, bytes queued).
    """

    __slots__ = ("_table", "_pending", "_statistics", "_paused", "_awaiting")

    def __init__(self, table: ChannelTable, pending: Pending, statistics: AppStatistics) -> None:
        self._table = table
        self._pending = pending
        self._statistics = statistics
        self._paused: set[str] = set()
        self._awaiting: dict[str, list[tuple[str, bytes]]] = {}
        """Member id -> what it is told once its join's reply is queued."""

    def paused(self, channel: str) -> bool:
        """Whether ``channel``'s ``member_*`` frames are paused on this node."""
        return channel in self._paused

    def silenced(self, member: Member, channel: str) -> bool:
        """Whether ``member`` gets no ``member_*`` frames of ``channel`` (paused)."""
        return not member.diffs and channel in self._paused

    def publish(self, event: f.MemberEvent, skip: str | None, members: int, limit: int) -> None:
        """One presence event of ``event.channel``, which has ``members`` members after it
        and the rule's ``limit``: to this node's ``member_*`` receivers as the frame itself,
        a paused or resumed frame, or nothing (see the module docstring)."""
        channel = event.channel
        receivers = self._table.presence_receivers(channel, diffs=False)
        if not receivers:
            self._paused.discard(channel)  # nobody here to keep it for
            return
        joiner = event.member.get("id") if event.kind == "member_join" else None
        if channel in self._paused:
            if members > resume_level(limit):
                self._tell_joiner(receivers, joiner, f.PresencePaused(channel, members, limit))
                return
            self._paused.discard(channel)
            self._deliver(receivers, _framed(f.PresenceResumed(channel, members)), None)
            return
        if members > limit:
            self._paused.add(channel)
            paused = f.PresencePaused(channel, members, limit)
            self._deliver(receivers, _framed(paused), joiner)
            self._tell_joiner(receivers, joiner, paused)
            return
        self._deliver(receivers, _framed(event), skip)

    def _deliver(self, receivers: Mapping[str, Member], data: bytes, skip: str | None) -> None:
        count = self._table.deliver(receivers, data, receivers.get(skip) if skip else None)
        self._statistics.presence_deliveries += count
        self._statistics.bytes_queued += len(data) * count

    def _tell_joiner(
        self, receivers: Mapping[str, Member], joiner: str | None, frame: f.PresencePaused
    ) -> None:
        """The member whose join this is, a receiver here, learns of the pause after the
        reply to its join."""
        member = receivers.get(joiner) if joiner is not None else None
        if member is None:
            return
        data = _framed(frame)
        waiting = self._awaiting.get(member.id)
        if waiting is not None:
            waiting.append((frame.channel, data))
        else:
            self._pending.push(member.outbox, data)

    def expect_reply(self, member: Member) -> None:
        """``member`` is joining: what it is told about its join waits for the reply."""
        self._awaiting.setdefault(member.id, [])

    def replied(self, member: Member) -> None:
        """The reply to ``member``'s join is queued (or its ``joined`` frame): what waited
        follows it."""
        if not self._awaiting:
            return
        for channel, data in self._awaiting.pop(member.id, ()):
            if channel in member.channels:  # not a join taken back meanwhile
                self._pending.push(member.outbox, data)

    def forget(self, member: Member) -> None:
        """``member`` is gone: nothing waits for it any more."""
        self._awaiting.pop(member.id, None)
