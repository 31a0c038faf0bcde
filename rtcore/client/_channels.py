"""A client's channels (sans-IO): which to rejoin after a reconnect, where the client is in
each one's message stream, and who is in each.

Theory of operation (protocol.md §4.4.1): for a joined channel with history the client keeps
its position, the ``(epoch, offset)`` of the last message it received there, or the
stream's top at the join. A rejoin recovers from it, and the join's ``ok`` says how that went
(:meth:`Channels.joined`). A message at or before the position was received already and is
dropped (:meth:`Channels.seen`); one of another epoch means the server lost the stream the
client was following. Each of these outcomes is reported as a :class:`Recovered` event to the
``report`` callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rtcore.client._events import Recovered
from rtcore.client._presence import MemberLists
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position


class Channels:
    """The channels a client joined, their positions and member lists."""

    __slots__ = ("rejoin", "join_data", "positions", "members", "_report")

    def __init__(self, report: Callable[[Recovered], None]) -> None:
        self.rejoin: dict[str, bool | None] = {}
        """Channels to rejoin after a reconnect, with their join echo option."""
        self.join_data: dict[str, Any] = {}
        """Per channel joined with ``data`` (for the app's join hook): sent again on rejoins."""
        self.positions: dict[str, Position] = {}
        """Per joined channel with history: the last message received there."""
        self.members = MemberLists()
        """Joined channels' member lists, kept from presence frames and listings."""
        self._report = report

    def joining(self, channel: str, recover: Position | None) -> None:
        """A join is being sent: recovering from ``recover``, or from nothing."""
        if recover is not None:
            self.positions[channel] = recover
        else:
            self.positions.pop(channel, None)

    def left(self, channel: str) -> None:
        self.forget(channel)
        self.positions.pop(channel, None)
        self.members.forget(channel)

    def forget(self, channel: str) -> None:
        """Not to be rejoined any more (left, or a rejoin refused for good)."""
        self.rejoin.pop(channel, None)
        self.join_data.pop(channel, None)

    def joined(self, channel: str, data: object) -> None:
        """A join's ok (its data): presence frames for ``channel`` update its member list
        from now on; the channel's position is the stream's top unless the replay brought
        it there (or, recovering, say how that went)."""
        self.members.track(channel)
        if not isinstance(data, dict):
            return
        epoch, offset = data.get("epoch"), data.get("offset")
        top = Position(epoch, offset) if isinstance(epoch, str) and type(offset) is int else None
        if "recovered" in data:
            if not data["recovered"] or top is None:
                _set(self.positions, channel, top)
            self._report(Recovered(channel, bool(data["recovered"]), data.get("reason"), top))
        elif top is not None and channel not in self.positions:
            self.positions[channel] = top

    def server_joined(self, frame: f.Joined) -> None:
        """The server put the client into a channel (protocol.md §5.7): its member list is
        kept and its position is the one the frame gives. It is not rejoined after a
        reconnect: the server puts the client back itself."""
        self.members.track(frame.channel)
        if frame.epoch is not None and frame.offset is not None:
            self.positions[frame.channel] = Position(frame.epoch, frame.offset)

    def seen(self, msg: f.Msg) -> bool:
        """Whether ``msg`` (of a channel with history) was received already; else it becomes
        the channel's position. A message of another epoch means the server lost the stream
        this client was following: reported as a Recovered event that did not recover."""
        assert msg.channel is not None and msg.offset is not None
        was = self.positions.get(msg.channel)
        epoch = msg.epoch or ""
        if was is not None and was.epoch == epoch and msg.offset <= was.offset:
            return True
        now = self.positions[msg.channel] = Position(epoch, msg.offset)
        if was is not None and was.epoch != epoch:
            self._report(Recovered(msg.channel, False, "epoch_changed", now))
        return False


def _set(positions: dict[str, Position], channel: str, position: Position | None) -> None:
    if position is None:
        positions.pop(channel, None)
    else:
        positions[channel] = position
