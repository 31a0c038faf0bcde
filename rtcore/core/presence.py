"""Batched presence: a channel's joins, leaves and updates folded into one frame (sans-IO).

Theory of operation: without batching every join fans a ``member_join`` out to every member,
so N joins cost O(N²) frames and writes. Connections that negotiated the ``presence_diffs``
feature (protocol.md §5.2.1) instead receive, per channel and flush pass, one ``presence``
frame listing what changed since the previous one: a window's K joins cost one frame per
member instead of K.

* :class:`ChannelDiff` folds one channel's events per member id. The member's *first* event
  in the window tells whether it was present before the window (a join: no; a leave or an
  update: yes); its last event whether it is present now. Before absent, now present: a
  join. Before present, now absent: a leave. Both present: a leave and a join if it left
  and came back in between, else an update if it was updated. Joined and left within the
  window: nothing. Applying leaves, then joins, then updates to any list that was the
  channel's membership before the window gives the membership after it (the property the
  hypothesis test checks).
* :class:`PresenceBatcher` holds an app's channels with pending diffs. The flusher flushes
  it at the start of every pass (through :class:`~rtcore.core.outbox.Pending`), and one
  channel's diff is flushed early, before any message to that channel is queued, so a
  ``msg`` never overtakes the presence that preceded it (protocol.md §5.3). Both cost
  nothing per subscriber beyond the one shared frame.
* Pacing: a diff sent to n members costs n writes. So that a big channel's joins cannot
  keep the flusher writing diffs (10,000 members joining: 10,000 writes per pass, every
  pass), a channel whose diff reached n members gets its next diff no sooner than that
  diff's cost (n × the measured cost of one write, ``Pending.write_seconds``) times
  ``(1 - DIFF_DUTY) / DIFF_DUTY`` later: diffs take at most about ``DIFF_DUTY`` of the
  server's time, however big the channel. Meanwhile the diff grows; the bytes are the same
  in fewer, larger writes. Channels of up to ``PACE_FROM`` members are never held back, and
  a message to the channel still flushes its diff at once.

Invariants: a channel is in the batcher's table only with a non-empty diff; the batcher is
marked pending exactly while its table is not empty; ``_due`` holds only channels whose last
diff reached more than ``PACE_FROM`` members.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from rtcore.core.outbox import Pending
from rtcore.protocol import frames as f

Info = dict[str, Any]
"""A member as clients see it: ``{"id", "user", "data"}``."""


@attrs.define(slots=True)
class _Entry:
    """One member's events in the window, folded."""

    before: bool
    """Present before the window (its first event was a leave or an update)."""
    present: bool
    info: Info
    """The member's latest ``{"id", "user", "data"}``."""
    cycled: bool = False
    """Present before and now, but left (and came back) in between."""
    updated: bool = False
    first: bool | None = None
    """The last join's ``first``."""
    last: bool | None = None
    """The first leave's ``last``."""
    left_info: Info | None = None
    """The member as it was when it first left (a leave entry shows it)."""


class ChannelDiff:
    """One channel's presence events since its last flush, folded per member."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def join(self, info: Info, first: bool | None) -> None:
        entry = self._entries.get(info["id"])
        if entry is None:
            self._entries[info["id"]] = _Entry(False, True, info, first=first)
            return
        entry.cycled = entry.cycled or entry.before
        entry.present, entry.info, entry.first = True, info, first

    def leave(self, info: Info, last: bool | None) -> None:
        entry = self._entries.get(info["id"])
        if entry is None:
            self._entries[info["id"]] = _Entry(True, False, info, last=last, left_info=info)
            return
        entry.present, entry.info = False, info
        if entry.left_info is None:
            entry.last, entry.left_info = last, info

    def update(self, info: Info) -> None:
        entry = self._entries.get(info["id"])
        if entry is None:
            self._entries[info["id"]] = _Entry(True, True, info, updated=True)
            return
        entry.info, entry.updated = info, True

    def frame(self, channel: str) -> f.PresenceDiff | None:
        """The folded diff as a frame (None if the events cancel out)."""
        joins: list[Info] = []
        leaves: list[Info] = []
        updates: list[Info] = []
        for e in self._entries.values():
            if e.before and (not e.present or e.cycled):
                leaves.append(_with(e.left_info or e.info, "last", e.last))
            if e.present and (not e.before or e.cycled):
                joins.append(_with(e.info, "first", e.first))
            elif e.present and e.updated:
                updates.append(e.info)
        if not (joins or leaves or updates):
            return None
        return f.PresenceDiff(channel, joins or None, leaves or None, updates or None)


def _with(info: Info, key: str, flag: bool | None) -> Info:
    return info if flag is None else {**info, key: flag}


Publish = Callable[[str, f.PresenceDiff], int]
"""Deliver one channel's diff frame to its diff-receiving members; returns how many."""

DIFF_DUTY = 0.25
"""The share of time one channel's diffs may take, at most (see Pacing above)."""
PACE_FROM = 100
"""Diffs to at most this many members are never held back (the wait would be ~ 1 ms)."""


class PresenceBatcher:
    """An app's pending presence diffs, by channel.

    Args:
        pending: the server's record of what awaits a flush; the batcher marks itself there
            while it holds diffs, and :meth:`Pending.take` flushes it.
        publish: delivers a channel's diff frame (the app's broker).
    """

    __slots__ = ("_pending", "_publish", "_diffs", "_due")

    def __init__(self, pending: Pending, publish: Publish) -> None:
        self._pending = pending
        self._publish = publish
        self._diffs: dict[str, ChannelDiff] = {}
        self._due: dict[str, float] = {}
        """Channel -> when its next diff may go (monotonic), after a diff to many members."""

    def __bool__(self) -> bool:
        return bool(self._diffs)

    def channel(self, channel: str) -> ChannelDiff:
        """The channel's pending diff, to record an event in (created, and marked, as needed)."""
        diff = self._diffs.get(channel)
        if diff is None:
            if not self._diffs:
                self._pending.mark_batch(self)
            diff = self._diffs[channel] = ChannelDiff()
        return diff

    def record(self, kind: str, channel: str, info: Info, flag: bool | None) -> None:
        """One presence event (``member_join``, ``member_leave`` or ``member_update``;
        ``flag``: ``first`` for a join, ``last`` for a leave) into ``channel``'s diff."""
        diff = self.channel(channel)
        if kind == "member_join":
            diff.join(info, flag)
        elif kind == "member_leave":
            diff.leave(info, flag)
        else:
            diff.update(info)

    def flush_channel(self, channel: str) -> None:
        """Send ``channel``'s pending diff now (before a message to it is queued)."""
        diff = self._diffs.pop(channel, None)
        if diff is not None:
            self._send(channel, diff)  # its due time stays: the next diff is still paced
            if not self._diffs:
                self._pending.unmark_batch(self)

    def flush(self, now: float = math.inf) -> float:
        """Send the pending diffs that are due at ``now`` (monotonic seconds; by default all
        of them, as before a broadcast); returns when the next held-back one is due (inf if
        none is)."""
        due = self._due
        next_due = math.inf
        for channel in list(self._diffs):
            at = due.get(channel, 0.0)
            if at > now:
                next_due = min(next_due, at)
                continue
            reached = self._send(channel, self._diffs.pop(channel))
            if reached > PACE_FROM and now < math.inf:
                cost = reached * self._pending.write_seconds
                due[channel] = now + cost * (1.0 - DIFF_DUTY) / DIFF_DUTY
            elif at:
                del due[channel]
        if now < math.inf and len(due) > 2 * len(self._diffs) + 64:  # forget past due times
            for channel in [c for c, at in due.items() if at <= now and c not in self._diffs]:
                del due[channel]
        if not self._diffs:
            self._pending.unmark_batch(self)
        return next_due

    def _send(self, channel: str, diff: ChannelDiff) -> int:
        frame = diff.frame(channel)
        return 0 if frame is None else self._publish(channel, frame)
