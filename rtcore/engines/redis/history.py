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

import attrs
import trio

from rtcore.core.app import framed
from rtcore.core.history import Entry, HistoryStore, MemoryHistory, Retention, Slice, new_epoch
from rtcore.core.members import Member
from rtcore.engines.base import BrokerUnavailable, Publication, Target, local_count
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.ops import BrokerCore, Op
from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

if TYPE_CHECKING:
    from rtcore.core.app import App

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
        back (with its position). Redis away: delivered here without a position."""
        the_app = self._apps[app]
        publication = Publication(app, Target.CHANNEL, channel, b"", skip)

        def deliver_here() -> int:
            return the_app.deliver_published(attrs.evolve(publication, data=framed(msg)))

        if self._down is not None:
            self.statistics.dropped += 1
            return deliver_here(), _no_position
        count = local_count(self._tables[app], publication)
        keys = self.keys.history(app, channel)
        args = [
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
        ]
        script = "HISTORY_PUBLISH"
        op = Op(lambda p: self._scripts[script](keys=keys, args=args, client=p), deliver_here)
        op.done = trio.Event()
        self._enqueue(op)
        return count, functools.partial(_position_of, op)

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
        other nodes published while this one could not hear (it is in the stream)."""
        for ch, (app, channel) in list(self._wanted.items()):
            last = self._last.get(ch)
            retention = self._apps[app].retention(channel)
            if last is None or retention is None or ch in self._filling:
                continue
            held: list[tuple[str, int, bytes]] = []
            self._filling[ch] = held
            try:
                found = await self.read_history(
                    app, channel, Position(*last), MAX_GAP_FILL, False, retention
                )
            except BrokerUnavailable:
                return  # away again: the next reconnection fills
            finally:
                del self._filling[ch]
            epoch, top = last
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


async def _no_position() -> Position | None:
    return None


async def _position_of(op: Op) -> Position | None:
    """The position Redis gave a published message, once written (None: it was not)."""
    assert op.done is not None
    await op.done.wait()
    if op.failed is not None or not op.result:
        return None
    epoch, offset = op.result
    return Position(epoch.decode(), int(offset))


def _entry(frame: bytes, offset: int | None = None) -> Entry:
    """A stored message from its framed bytes (as the publish script built them)."""
    msg = codec.decode_msg(wsframe.payload_of(frame))
    stored = msg.offset if offset is None else offset
    assert stored is not None  # the publish script writes every stored message's offset
    return Entry(stored, msg.epoch or "", frame, 0.0)
