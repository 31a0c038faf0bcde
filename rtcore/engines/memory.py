"""The memory broker: one process, publications delivered at once to the local tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rtcore.core.history import Entry, MemoryHistory, Retention, Slice
from rtcore.core.limits.limiter import Refusal, Rule
from rtcore.core.members import ChannelTable, Member
from rtcore.engines.base import Publication, deliver_local
from rtcore.protocol.errors import LocalProtocolError
from rtcore.protocol.frames import Msg
from rtcore.protocol.position import Position


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

    def publish_history(
        self, app: str, channel: str, msg: Msg, retention: Retention, skip: str | None
    ) -> tuple[int, Callable[[], Awaitable[Position | None]]]:
        raise LocalProtocolError("the memory broker's history is its store's (history)")

    def read_history(
        self,
        app: str,
        channel: str,
        since: Position | None,
        limit: int,
        reverse: bool,
        retention: Retention,
    ) -> Awaitable[Slice]:
        raise LocalProtocolError("the memory broker's history is read synchronously")

    def prepare_join(
        self, app: str, channel: str, since: Position | None, limit: int, retention: Retention
    ) -> Awaitable[tuple[Slice, list[Entry]]]:
        raise LocalProtocolError("the memory broker's joins are synchronous")

    def release(self, app: str, channel: str) -> None:
        raise LocalProtocolError("the memory broker subscribes to nothing")

    def catch_up(self, app: str, channel: str, member: Member, through: int) -> None:
        raise LocalProtocolError("the memory broker's joins are atomic with their replay")

    def members(
        self, app: str, channel: str, after: int | None, limit: int
    ) -> Awaitable[tuple[list[Any], int | None]]:
        raise LocalProtocolError("the memory broker's members are the channel table's")

    def publish(self, publication: Publication) -> int:
        return deliver_local(self._tables[publication.app], publication)

    def health(self) -> str | None:
        return None  # in process: always able to deliver
