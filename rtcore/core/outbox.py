"""Outbound queues and the record of what awaits a flush (sans-IO).

Fan-out appends the *same* framed ``bytes`` object to each target's :class:`Outbox`; nothing
is copied or awaited per subscriber. :class:`Pending` records which outboxes (or whole groups
of members, for a channel or broadcast fan-out) gained data since the last flush, so the
server's flusher visits only those. The byte budget is enforced by the flusher, which is the
only place that knows what the socket has accepted; and, for the replies a session queues for
its own connection, by the session as it queues them (``Pending.passes`` tells it when the
flusher last took everything pending), so a burst of requests within one pass is bounded too.

Batches (an app's pending presence diffs, :mod:`rtcore.core.presence`) are recorded here too:
:meth:`Pending.take` flushes them first, so what they deliver goes out in the same pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol


class Batch(Protocol):
    """Something that queues its deliveries when flushed (a presence batcher)."""

    def flush(self, now: float = math.inf) -> float:
        """Queue what is due at ``now``; return when more will be due (inf: nothing held)."""
        ...


class Recipient(Protocol):
    """What a delivery needs of a member: its outbox (``rtcore.core.members.Member`` is one)."""

    @property
    def outbox(self) -> Outbox: ...


class Outbox:
    """One connection's queue of framed bytes that the socket has not accepted yet.

    Attributes:
        items: framed messages in send order; the flusher empties it.
        owner: the transport's object for this connection (opaque to the core).
        closed: set once the connection is gone; later appends are harmless garbage.
    """

    __slots__ = ("items", "owner", "closed")

    def __init__(self, owner: Any = None) -> None:
        self.items: list[bytes | memoryview] = []
        self.owner = owner
        self.closed = False


class Pending:
    """What was queued since the last flush: single outboxes and member groups."""

    __slots__ = (
        "outboxes",
        "groups",
        "passes",
        "bytes_pushed",
        "batches",
        "batch_due",
        "write_seconds",
    )

    def __init__(self) -> None:
        self.bytes_pushed = 0
        """Bytes queued through :meth:`push` (replies, pings), for the metrics."""
        self.outboxes: set[Outbox] = set()
        # id(group) -> group; the group object is kept alive here, so its id stays unique.
        self.groups: dict[int, Mapping[str, Recipient]] = {}
        self.batches: dict[int, Batch] = {}
        """Batches holding deliveries not yet queued, by id (kept alive here, as groups)."""
        self.batch_due = math.inf
        """When the last :meth:`take` left a batch holding something back until."""
        self.write_seconds = 10e-6
        """What writing one connection costs in a flush pass (a moving average the transport
        measures; batches pace themselves by it)."""
        self.passes = 0
        """How many times :meth:`take` was called (flush passes so far)."""

    def push(self, outbox: Outbox, data: bytes) -> None:
        """Queue ``data`` on one connection."""
        outbox.items.append(data)
        self.outboxes.add(outbox)
        self.bytes_pushed += len(data)

    def mark_group(self, group: Mapping[str, Recipient]) -> None:
        self.groups[id(group)] = group

    def mark_batch(self, batch: Batch) -> None:
        self.batches[id(batch)] = batch

    def unmark_batch(self, batch: Batch) -> None:
        self.batches.pop(id(batch), None)

    def observe_write_cost(self, seconds: float) -> None:
        """A flush pass wrote connections at ``seconds`` each (measured by the transport)."""
        self.write_seconds += (seconds - self.write_seconds) / 8

    def __bool__(self) -> bool:
        return bool(self.outboxes or self.groups or self.batches)

    def take(self, now: float = math.inf) -> tuple[set[Outbox], list[Mapping[str, Recipient]]]:
        """Everything marked so far, resetting the record; batches are flushed first, with
        what is due at ``now`` (monotonic seconds; by default everything)."""
        due = math.inf
        for batch in list(self.batches.values()):
            due = min(due, batch.flush(now))
        self.batch_due = due
        outboxes, groups = self.outboxes, list(self.groups.values())
        self.outboxes = set()
        self.groups = {}
        self.passes += 1
        return outboxes, groups
