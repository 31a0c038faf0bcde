"""Channel history: bounded streams of published messages, offsets, epochs, recovery (sans-IO).

Theory of operation (protocol.md §4.11 and §4.4.1):

* A channel whose rule sets ``history_size`` keeps a *stream* per (app, channel): the last
  ``history_size`` messages published to it, each for ``history_ttl`` seconds: a message
  published at ``t`` is held while ``wall < t + history_ttl``. Every message
  gets an ``offset``, 1 for the stream's first and +1 for each next, and carries the stream's
  ``epoch``: a random id naming this incarnation of the stream. A stream that is lost (its
  identity expired ``meta_ttl`` after its last use, it was evicted to keep memory bounded, or
  the node restarted) comes back with a new epoch and offsets from 1 again, so a position
  ``(epoch, offset)`` names one message of one stream and is never mistaken for another's.
* :meth:`HistoryStore.publish` assigns the position and appends in one step, and returns the
  message framed once with its position inside: every recipient, and every replay, gets the
  same bytes. :meth:`HistoryStore.read` returns a slice of the stream with the stream's top
  (the last offset given out). A channel without a stream has top 0 of the epoch its next
  stream will take, so that a client that joins an empty channel still gets a position to
  recover from -- and a read creates nothing (each store says how it keeps that epoch).
* :func:`decide_recovery` is the recovery rule, a pure function of a read: a client at
  ``(epoch, offset)`` is recovered iff the epoch is the stream's and the stream still holds
  exactly ``offset + 1 .. top``; never partially. It refuses, as not recovered, a replay of
  more than ``max_messages`` messages or ``max_bytes`` bytes (``too_many``).

Memory is bounded three ways: per stream by ``history_size`` and ``history_ttl``; streams
whose identity is older than ``meta_ttl`` are dropped by :meth:`MemoryHistory.sweep`; and
all streams of a node together hold at most ``max_bytes`` (counting what is held: each
message's framed bytes -- the only form it is kept in -- and a measured overhead per message
and per stream, empty streams included): beyond it the oldest messages of the least recently
used stream go first, then that stream itself.

Times here are wall-clock seconds (Unix time), passed in: a message's age is measured from
its ``ts``, which is what a Redis store's TTLs measure too.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from itertools import islice
from typing import Any, Protocol

import attrs

from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f
from rtcore.protocol.codes import ErrorCode
from rtcore.protocol.errors import RemoteProtocolError
from rtcore.protocol.position import Position

REASONS = (
    "gap_too_old",
    "epoch_changed",
    "history_off",
    "too_many",
    "forbidden",
    "already_joined",
)
"""Why a join's recovery failed (protocol.md §4.4.1)."""
ENTRY_OVERHEAD = 200
"""Bytes counted per stored message besides its framed bytes (the deque slot, the entry
object, the bytes object's header: about 120 measured); an over-estimate that keeps
``max_bytes`` honest."""
STREAM_OVERHEAD = 1500
"""Bytes counted per stream besides its messages and its names (the stream object, its
deque, its table entry and key, its epoch: about 1,100 measured with tracemalloc,
tests/unit/test_history_budget.py)."""


@attrs.frozen
class Retention:
    """How much of a channel's history is kept (from its channel rule)."""

    size: int
    """The last ``size`` messages..."""
    ttl: float
    """...each for ``ttl`` seconds after it was published."""


@attrs.frozen
class Entry:
    """One stored message: its offset, its stream's epoch and its WebSocket bytes.

    Only the bytes are held, never the decoded message: a decoded value can cost many times
    its encoded size (an empty array: one byte, some 60 decoded), and what a store counts
    against its budget must be what it holds."""

    offset: int
    epoch: str
    data: bytes
    """The framed ``msg`` (with its offset and epoch): the bytes its live recipients got."""
    expires: float
    """Wall time from which it is no longer held: at exactly this instant it has expired (the
    Redis store draws the same boundary, ``lua/history.lua``; tests/cases holds the cases)."""

    @property
    def msg(self) -> f.Msg:
        """The message, decoded from :attr:`data` (for a history page's reply)."""
        return codec.decode_msg(wsframe.payload_of(self.data))


@attrs.frozen
class Slice:
    """What a read found: the stream's top, its oldest held offset, and the entries asked for."""

    top: Position
    """The stream's epoch and the last offset it gave out (0: none yet)."""
    first: int
    """The oldest offset the stream holds (``top.offset + 1`` when it holds none)."""
    entries: list[Entry]
    """Forward: ascending offsets; reverse: descending."""


@attrs.frozen
class Recovery:
    """The outcome of a recovery: the entries to replay (in order) when recovered, else why
    not."""

    recovered: bool
    reason: str | None
    """One of :data:`REASONS` when not recovered."""
    top: Position
    entries: list[Entry] = attrs.field(factory=list)


class HistoryStore(Protocol):
    """Where a broker keeps channel history. ``app`` and ``channel`` name the stream."""

    def publish(
        self, app: str, channel: str, msg: f.Msg, retention: Retention, wall: float
    ) -> Entry:
        """Give ``msg`` the stream's next offset (and its epoch), append it, and return it
        framed: atomically, so no two messages get one offset and every recipient sees the
        stream's order."""

    def read(
        self,
        app: str,
        channel: str,
        *,
        since: Position | None,
        limit: int,
        reverse: bool,
        wall: float,
    ) -> Slice:
        """Up to ``limit`` held entries: forward, those after ``since.offset`` (from the
        oldest held without ``since``); reverse, those before ``since.offset`` (from the top
        without ``since``), newest first. A ``since`` of another epoch reads nothing. A
        channel without a stream reads as top 0 of the epoch its next stream will take, and
        the read creates nothing."""

    def sweep(self, wall: float) -> None:
        """Drop what has expired (called on the server's periodic sweep)."""


def decide_recovery(since: Position, found: Slice, max_messages: int, max_bytes: int) -> Recovery:
    """Whether a client at ``since`` recovers from ``found`` (a forward read after
    ``since.offset`` of at least ``max_messages + 1`` entries).

    Recovered iff ``since`` is of the stream's epoch, not beyond its top, and the stream
    still holds every offset after it; refused (``too_many``) beyond ``max_messages``
    messages or ``max_bytes`` framed bytes.
    """
    top = found.top
    if since.epoch != top.epoch or since.offset > top.offset:
        return Recovery(False, "epoch_changed", top)
    if since.offset + 1 < found.first:
        return Recovery(False, "gap_too_old", top)
    missed = top.offset - since.offset
    if missed > max_messages or sum(len(e.data) for e in found.entries) > max_bytes:
        return Recovery(False, "too_many", top)
    assert len(found.entries) == missed, "a forward read returns every held offset after since"
    return Recovery(True, None, top, found.entries)


def parse_position(value: Any, field: str) -> Position:
    """A position from the wire (``{"epoch": str, "offset": uint}``).

    Raises:
        RemoteProtocolError: ``bad_request``, naming ``field``.
    """
    epoch = value.get("epoch") if isinstance(value, dict) else None
    offset = value.get("offset") if isinstance(value, dict) else None
    if (
        type(epoch) is not str
        or not 1 <= len(epoch) <= 64
        or type(offset) is not int
        or not 0 <= offset <= codec.MAX_REQUEST_ID
    ):
        raise RemoteProtocolError(
            f"{field}: must be a map of 'epoch' (a string of 1-64 characters) and 'offset' "
            "(an unsigned integer below 2**53)",
            code=ErrorCode.BAD_REQUEST,
        )
    return Position(epoch, offset)


def check_since(since: Position, found: Slice, reverse: bool) -> None:
    """A history read's ``since`` must lie in the stream: its epoch, not beyond its top, and
    (forward) not before the oldest message held.

    Raises:
        RemoteProtocolError: ``unrecoverable_position``.
    """
    top = found.top
    if since.epoch != top.epoch or since.offset > top.offset:
        why = f"the channel's stream is now epoch {top.epoch!r}, offsets up to {top.offset}"
    elif not reverse and since.offset + 1 < found.first:
        why = f"the oldest message held is offset {found.first}"
    else:
        return
    raise RemoteProtocolError(
        f"history: position {since.epoch}:{since.offset} is not in the channel's history ({why})",
        code=ErrorCode.UNRECOVERABLE_POSITION,
    )


def page(found: Slice, limit: int, max_bytes: int) -> dict[str, Any]:
    """A history reply's data from a read of up to ``limit + 1`` entries: at most ``limit``
    messages (wire maps, as in a ``msg`` frame) whose framed sizes add up to at most
    ``max_bytes`` (one at least), the stream's top, and ``next``: the position to read
    the next page from, or None when this is the last."""
    messages: list[dict[str, Any]] = []
    size = 0
    for entry in found.entries[:limit]:
        size += len(entry.data)
        if size > max_bytes and messages:
            break
        messages.append(codec.to_wire(entry.msg))
    more = len(messages) < len(found.entries)
    last = messages[-1]["offset"] if messages else 0
    return {
        "messages": messages,
        **found.top.to_wire(),
        "next": Position(found.top.epoch, last).to_wire() if more else None,
    }


def new_epoch() -> str:
    """A random epoch: 8 hex digits, new for every stream incarnation."""
    return secrets.token_hex(4)


class _Stream:
    __slots__ = ("epoch", "top", "entries", "used", "bytes")

    def __init__(self, epoch: str, wall: float, cost: int) -> None:
        self.epoch = epoch
        self.top = 0
        self.entries: deque[Entry] = deque()
        self.used = wall
        """When it was last published to (its identity lives ``meta_ttl`` more)."""
        self.bytes = cost
        """What it holds as counted: :data:`STREAM_OVERHEAD`, its names, its entries."""

    def first(self) -> int:
        return self.entries[0].offset if self.entries else self.top + 1

    def expire(self, wall: float) -> int:
        """Drop expired messages from the front; returns the bytes freed."""
        freed = 0
        entries = self.entries
        while entries and entries[0].expires <= wall:
            freed += len(entries.popleft().data) + ENTRY_OVERHEAD
        self.bytes -= freed
        return freed


def framed_msg(msg: f.Msg) -> bytes:
    return wsframe.binary_frame(codec.encode(msg))


class MemoryHistory:
    """History for one node, in memory (the memory broker's store).

    A read of a channel that has no stream creates none (reads must not grow memory): it
    answers top 0 of the *unused epoch*, which the next stream created takes, so a client
    that read an empty channel recovers from ``(epoch, 0)`` once messages arrive. Streams
    created meanwhile share that epoch -- a position is always read with its channel, so
    only a channel's successive streams need distinct epochs -- and whenever a stream is
    dropped (expired or evicted) the unused epoch is replaced, so a channel's next stream
    never takes an epoch it had, and a position read before a stream that was since lost is
    refused (``epoch_changed``) rather than wrongly recovered.

    Args:
        max_bytes: what all streams together may hold (see the module docstring).
        meta_ttl: seconds a stream's identity (epoch and top) outlives its last publish, so
            that a client of a quiet channel still recovers (with nothing to replay).
        epochs: makes epochs (tests pass a predictable one).
    """

    def __init__(
        self,
        max_bytes: int = 256 * 1024 * 1024,
        meta_ttl: float = 86_400.0,
        epochs: Callable[[], str] = new_epoch,
    ) -> None:
        self.max_bytes = max_bytes
        self.meta_ttl = meta_ttl
        self._epochs = epochs
        self._unused = epochs()
        """The epoch of channels without a stream; the next stream created takes it."""
        self._streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()
        """Least recently used first."""
        self.bytes = 0
        """What the streams hold, as counted against ``max_bytes``."""

    def __len__(self) -> int:
        return len(self._streams)

    def _live(self, key: tuple[str, str], wall: float) -> _Stream | None:
        """The stream of ``key`` if it exists and its identity has not expired (else None,
        and an expired one is dropped); its expired messages are dropped."""
        stream = self._streams.get(key)
        if stream is None:
            return None
        if stream.used + self.meta_ttl <= wall:
            self._drop(key, stream)
            return None
        self.bytes -= stream.expire(wall)
        return stream

    def _create(self, key: tuple[str, str], wall: float) -> _Stream:
        cost = STREAM_OVERHEAD + len(key[0]) + len(key[1])
        stream = self._streams[key] = _Stream(self._unused, wall, cost)
        self.bytes += cost
        self._bound(keep=key)
        return stream

    def _drop(self, key: tuple[str, str], stream: _Stream) -> None:
        del self._streams[key]
        self.bytes -= stream.bytes
        self._unused = self._epochs()  # no later stream of this channel takes its epoch

    def publish(
        self, app: str, channel: str, msg: f.Msg, retention: Retention, wall: float
    ) -> Entry:
        key = (app, channel)
        stream = self._live(key, wall) or self._create(key, wall)
        self._streams.move_to_end(key)
        stream.used = wall
        stream.top += 1
        msg = attrs.evolve(msg, offset=stream.top, epoch=stream.epoch)
        entry = Entry(stream.top, stream.epoch, framed_msg(msg), wall + retention.ttl)
        entries = stream.entries
        entries.append(entry)
        added = len(entry.data) + ENTRY_OVERHEAD
        while len(entries) > retention.size:
            added -= len(entries.popleft().data) + ENTRY_OVERHEAD
        stream.bytes += added
        self.bytes += added
        self._bound(keep=key)
        return entry

    def _bound(self, keep: tuple[str, str]) -> None:
        """Evict, least recently used stream first, until within ``max_bytes``: its oldest
        messages, then (once empty) the stream itself -- never the stream ``keep``."""
        while self.bytes > self.max_bytes:
            key, stream = next(iter(self._streams.items()))
            if stream.entries:
                freed = len(stream.entries.popleft().data) + ENTRY_OVERHEAD
                stream.bytes -= freed
                self.bytes -= freed
            elif key != keep:
                self._drop(key, stream)
            else:
                return  # only the stream being written is left, and it is empty

    def read(
        self,
        app: str,
        channel: str,
        *,
        since: Position | None,
        limit: int,
        reverse: bool,
        wall: float,
    ) -> Slice:
        stream = self._live((app, channel), wall)
        if stream is None:  # no stream, and none is created: top 0 of the unused epoch
            return Slice(Position(self._unused, 0), 1, [])
        top = Position(stream.epoch, stream.top)
        first = stream.first()
        if since is not None and since.epoch != stream.epoch:
            return Slice(top, first, [])
        entries = stream.entries
        if reverse:
            end = len(entries) if since is None else min(len(entries), since.offset - first)
            picked = [entries[i] for i in range(end - 1, max(end - limit, 0) - 1, -1)]
            return Slice(top, first, picked)
        start = 0 if since is None else max(0, since.offset + 1 - first)
        return Slice(top, first, list(islice(entries, start, start + limit)))

    def sweep(self, wall: float) -> None:
        """Drop streams whose identity expired, and expired messages of the others."""
        for key, stream in list(self._streams.items()):
            if stream.used + self.meta_ttl <= wall:
                self._drop(key, stream)
            else:
                self.bytes -= stream.expire(wall)
