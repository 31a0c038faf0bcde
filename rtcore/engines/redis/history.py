"""Channel history with the Redis broker: a part of :class:`RedisBroker`.

Each channel with history is a Redis Stream (``keys``, ``lua/history*.lua``): a script gives
a message its offset, appends it and publishes it, so every node delivers one order. A join
with ``recover`` subscribes, reads the stream and holds what arrives live meanwhile, then the
session joins the connection with the replay in one step; copies still in flight through
pub/sub that the replay already gave are taken back (``catch_up``). A node cut off from
pub/sub fills each channel's gap from the stream when it is back (``_fill_gaps``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from rtcore.core.history import Entry, HistoryStore, MemoryHistory, Retention, Slice, new_epoch
from rtcore.core.members import Member
from rtcore.engines.base import BrokerUnavailable, Publication, Target, local_count
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.ops import BrokerCore, Op, Settle
from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

if TYPE_CHECKING:
    from rtcore.core.app import App

SETTLE_SECONDS = 15.0
"""How long past its deadline a history publish whose link broke waits to be settled (Redis
back, its clock past the deadline); beyond, its sender is told the outcome is unknown."""
MARKER_TTL_MS = 300_000
"""How long Redis keeps the marker that a history publish was applied (for settling)."""
UNKNOWN = object()
"""A history publish's result when its outcome was lost with a restarted Redis."""

MAX_GAP_FILL = 10_000
"""Messages of one channel a node delivers after an outage, at most (beyond: the gap stays,
and the offsets its clients see jump: they recover by rejoining)."""


class HistoryMixin(BrokerCore):
    """History methods of :class:`RedisBroker`, and their state."""

    def _init_history(self, meta_ttl: float) -> None:
        self._meta_ttl = meta_ttl
        self._holds = {}
        self._catching = {}
        self._last = {}
        self._filling = {}
        self._through = {}
        self._no_history = MemoryHistory()
        self._published = 0
        self._redis_offset = 0.0
        self._unsettled = []

    @property
    def history(self) -> HistoryStore:
        """Not used with this broker: a channel's history is in Redis (``publish_history``,
        ``read_history``, ``prepare_join``), asynchronous. An empty store, for the sweep."""
        return self._no_history

    def publish_history(
        self,
        app: str,
        channel: str,
        msg: f.Msg,
        retention: Retention,
        skip: str | None,
    ) -> tuple[int, Callable[[], Awaitable[Position | None]]]:
        """A message of a channel with history: Redis gives it its offset and epoch, appends
        it to the stream and publishes it, in one script; every node delivers it as it comes
        back (with its position). Never delivered any other way: the stream is the only truth.

        Its outcome is single (protocol.md §4.8): the wait returns its position, or raises
        :class:`BrokerUnavailable` only when it provably was not and never will be applied
        (Redis away, not written before its deadline, or the script refused it as late), or
        returns None when Redis restarted before its outcome could be read (unknown)."""
        if self._down is not None:
            self.statistics.refused += 1
            return 0, functools.partial(_refused, f"Redis is unreachable ({self._down})")
        count = local_count(self._tables[app], Publication(app, Target.CHANNEL, channel, b""))
        self._published += 1
        pid = f"{self.node}-{self._published:x}"
        deadline = trio.current_time() + self.config.command_timeout
        settle = Settle(self.keys.published(app, channel, pid), self._redis_ms(deadline), self._run)
        keys = [*self.keys.history(app, channel), settle.marker]
        args = self._publish_args(msg, retention, channel, skip, settle.deadline)
        script = "HISTORY_PUBLISH"
        op = Op(lambda p: self._scripts[script](keys=keys, args=args, client=p))
        op.done, op.settle = trio.Event(), settle
        self._enqueue(op)  # a full queue finishes it as failed: never written
        return count, functools.partial(self._placed, op, deadline)

    def _publish_args(
        self, msg: f.Msg, retention: Retention, channel: str, skip: str | None, deadline: int
    ) -> list[bytes]:
        """HISTORY_PUBLISH's ARGV (lua/history_publish.lua)."""
        return [
            self._publish_cmd,
            self.node.encode(),
            new_epoch().encode(),
            str(int(self._meta_ttl * 1000)).encode(),
            str(retention.size).encode(),
            str(max(1, int(retention.ttl * 1000))).encode(),
            rp.msg_head(codec.to_wire(msg)),
            Target.CHANNEL.value.encode(),
            channel.encode(),
            b"",
            (skip or "").encode(),
            str(deadline).encode(),
            str(MARKER_TTL_MS).encode(),
        ]

    async def _placed(self, op: Op, deadline: float) -> Position | None:
        """A history publish's outcome (see ``publish_history``), waited for."""
        assert op.done is not None
        with trio.move_on_at(deadline):
            await op.done.wait()
        if not op.done.is_set() and op in self._queue:  # never written: now it never will be
            self._queue.remove(op)
            self.statistics.refused += 1
            raise BrokerUnavailable("not written to Redis within command_timeout: not published")
        with trio.move_on_at(deadline + SETTLE_SECONDS):
            await op.done.wait()
        if not op.done.is_set() or op.result is UNKNOWN:
            self.statistics.unknown += 1
            return None
        if op.failed is not None:
            self.statistics.refused += 1
            raise BrokerUnavailable(f"{op.failed}: not published")
        if op.result[0] == b"late":
            self.statistics.refused += 1
            raise BrokerUnavailable("Redis took it after its deadline: not published")
        epoch, offset = op.result[0], op.result[1]
        if len(op.result) > 2:
            self._measured(int(op.result[2]))
        return Position(epoch.decode(), int(offset))

    async def _settle(self, client: Any) -> None:
        """After a reconnection: the outcome of each history publish that was on its way when
        the link broke. Once Redis's clock is past its deadline the script can no longer
        apply it, so its marker says whether it did; a Redis restarted meanwhile may have
        lost the marker with what it applied (then the outcome is unknown)."""
        while self._unsettled:
            op = self._unsettled[0]
            assert op.settle is not None
            now = await self._redis_now(client, op.settle.marker)
            if now <= op.settle.deadline:
                await trio.sleep((op.settle.deadline - now + 1) / 1000)
                continue
            marker = await client.get(op.settle.marker)
            if marker is not None:
                op.finish(marker.split(b" "))
            elif op.settle.run == self._run:
                op.finish([b"late"])
            else:
                op.finish(UNKNOWN)
            self._unsettled.pop(0)

    async def read_history(
        self,
        app: str,
        channel: str,
        since: Position | None,
        limit: int,
        reverse: bool,
        retention: Retention,
    ) -> Slice:
        """A slice of the channel's stream in Redis (see ``HistoryStore.read``)."""
        if self._down is not None:
            raise BrokerUnavailable(f"Redis is unreachable ({self._down})")
        keys = self.keys.history(app, channel)
        args = [
            new_epoch().encode(),
            str(int(self._meta_ttl * 1000)).encode(),
            str(max(1, int(retention.ttl * 1000))).encode(),
            b"" if since is None else str(since.offset).encode(),
            str(limit).encode(),
            b"1" if reverse else b"0",
        ]
        rows = await self._call(
            lambda p: self._scripts["HISTORY_READ"](keys=keys, args=args, client=p)
        )
        epoch = rows[0].decode()
        top = Position(epoch, int(rows[1]))
        if since is not None and since.epoch != epoch:
            return Slice(top, int(rows[2]), [])
        return Slice(top, int(rows[2]), [_entry(frame) for frame in rows[3:]])

    async def prepare_join(
        self,
        app: str,
        channel: str,
        since: Position | None,
        limit: int,
        retention: Retention,
    ) -> tuple[Slice, list[Entry]]:
        """For a join of a channel with history: subscribe, then read the stream after
        ``since`` (``limit`` entries; 0: only its top), holding the channel's live messages
        that arrive meanwhile -- returned too, so that the joiner gets the read, then those
        after it, then (joined once this returns, before any other task runs) the live
        ones: no gap, no duplicate, one order (the centrifuge way)."""
        ch = self.keys.channel_pubsub(app, channel)
        self.want(app, channel)
        held: list[Entry] = []
        self._holds.setdefault(ch, []).append(held)
        try:
            await self.joined(app, channel, "")
            if self._down is not None:
                raise BrokerUnavailable(f"Redis is unreachable ({self._down})")
            found = await self.read_history(app, channel, since, limit, False, retention)
            return found, held
        finally:
            holds = self._holds[ch]
            holds.remove(held)
            if not holds:
                del self._holds[ch]

    def _in_stream_order(self, channel: bytes, epoch: str, offset: int, frame: bytes) -> bool:
        """Whether to deliver a history message now: not while the node fills a gap of that
        channel (then it waits in the gap's buffer), not if the gap's fill gave it already."""
        paused = self._filling.get(channel)
        if paused is not None:
            paused.append((epoch, offset, frame))
            return False
        through = self._through.get(channel)
        if through is not None:
            if through[0] == epoch and offset <= through[1]:
                return False
            del self._through[channel]
        self._last[channel] = (epoch, offset)
        return True

    async def _fill_gaps(self) -> None:
        """After an outage: each channel with history here gets, in order and once, what
        other nodes published while this one could not hear (it is in the stream) -- or,
        when the stream was lost and began again (a new epoch), the new stream from its
        first message, as every node's members get it."""
        for ch, (app, channel) in list(self._wanted.items()):
            last = self._last.get(ch)
            retention = self._apps[app].retention(channel)
            if last is None or retention is None or ch in self._filling:
                continue
            held: list[tuple[str, int, bytes]] = []
            self._filling[ch] = held
            try:
                found = await self._read_gap(app, channel, Position(*last), retention)
            except BrokerUnavailable:
                return  # away again: the next reconnection fills
            finally:
                del self._filling[ch]
            epoch, top = last
            if found.top.epoch != epoch:  # a new stream: from its start
                epoch, top = found.top.epoch, 0
            fill = found.top.epoch == epoch and found.first <= top + 1
            frames = [(e.offset, e.data) for e in found.entries] if fill else []
            frames += [(o, data) for e, o, data in held if e == epoch]
            for offset, data in frames:
                if offset == top + 1:  # in order, each once; a hole ends the fill
                    publication = Publication(app, Target.CHANNEL, channel, data)
                    self._apps[app].deliver_published(publication)
                    top = offset
            self._last[ch] = self._through[ch] = (epoch, top)
            self._poke()

    async def _read_gap(
        self, app: str, channel: str, last: Position, retention: Retention
    ) -> Slice:
        """The stream after ``last``; if its epoch is another, the new stream from its start."""
        found = await self.read_history(app, channel, last, MAX_GAP_FILL, False, retention)
        if found.top.epoch == last.epoch:
            return found
        since = Position(found.top.epoch, 0)
        return await self.read_history(app, channel, since, MAX_GAP_FILL, False, retention)

    def catch_up(self, app: str, channel: str, member: Member, through: int) -> None:
        """``member`` just joined ``channel`` with every message up to offset ``through``
        (a replay): the live copies of those that are still on their way through pub/sub
        (published before the read, delivered after it) must not reach it twice."""
        ch = self.keys.channel_pubsub(app, channel)
        self._catching.setdefault(ch, {})[member.id] = (member, through)

    @staticmethod
    def _caught_up(
        catching: dict[str, tuple[Member, int]], group: Any, offset: int, frame: bytes
    ) -> None:
        """Take back a live message a catching-up member already had: it is the last item
        of its outbox (queued just now). A member is caught up at its first newer message."""
        for member_id, (member, through) in list(catching.items()):
            if offset > through or group.get(member_id) is not member:
                del catching[member_id]
                continue
            items = member.outbox.items
            if items and items[-1] is frame:
                items.pop()

    def release(self, app: str, channel: str) -> None:
        """A join that ``prepare_join`` was for did not happen: unsubscribe unless the
        channel has members here."""
        if not self._tables[app].members(channel):
            self.unwant(app, channel)

    def _history_message(self, app: App, channel: bytes, fields: Any) -> None:
        """A message of a channel with history from Redis: in the stream's order, once; held
        for joins being recovered; taken back from members who had it in their replay."""
        target, name, user, skip, offset, epoch, frame = fields
        if not self._in_stream_order(channel, epoch.decode(), offset, frame):
            return
        holds = self._holds.get(channel)
        if holds:
            entry = _entry(frame, offset)
            for held in holds:
                held.append(entry)
        publication = Publication(
            app.name, Target(target.decode()), name.decode(), frame, rp.text(skip)
        )
        app.deliver_published(publication)
        catching = self._catching.get(channel)
        if catching:
            self._caught_up(catching, app.table.members(publication.name or ""), offset, frame)
            if not catching:
                del self._catching[channel]


async def _refused(reason: str) -> Position | None:
    raise BrokerUnavailable(f"{reason}: not published")


def _entry(frame: bytes, offset: int | None = None) -> Entry:
    """A stored message from its framed bytes (as the publish script built them)."""
    msg = codec.decode_msg(wsframe.payload_of(frame))
    stored = msg.offset if offset is None else offset
    assert stored is not None  # the publish script writes every stored message's offset
    return Entry(stored, msg.epoch or "", frame, 0.0)
