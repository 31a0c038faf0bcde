"""What the Redis broker's parts share: its write queue entries and its counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtcore.config.model import BrokerConfig
from rtcore.core.history import Entry
from rtcore.core.members import ChannelTable, Member
from rtcore.engines.redis.keys import Keys

if TYPE_CHECKING:
    from rtcore.core.app import App

PIPELINE_MAX = 1000
"""Operations per pipeline round trip."""


@attrs.define
class BrokerStatistics:
    """Counters of the broker (``rtcore_broker_*`` metrics)."""

    published: int = 0
    """Operations written to Redis."""
    received: int = 0
    """Envelopes received from Redis."""
    dropped: int = 0
    """Operations not forwarded (Redis away, or the queue full): delivered locally only."""
    reconnects: int = 0
    bad_envelopes: int = 0


@attrs.define(slots=True)
class Op:
    """One queued write: ``send`` queues it on a pipeline; ``fallback`` does its local part
    when it cannot be forwarded."""

    send: Callable[[Any], Any]
    fallback: Callable[[], object] | None = None
    done: trio.Event | None = None
    """Set once written (or failed: then ``failed``), for those who wait for it."""
    result: Any = None
    failed: str | None = None
    key: tuple[str, str, str] | None = None
    """(app, channel, connection) of a join, which its request's answer waits for."""
    settled: Callable[[Any], None] | None = None
    """Given the result once written (a presence script's cluster transitions)."""

    def finish(self, result: Any = None, failed: str | None = None) -> None:
        self.result, self.failed = result, failed
        if failed is None and self.settled is not None:
            self.settled(result)
        if self.done is not None:
            self.done.set()


class BrokerCore:
    """The state and the core methods of ``RedisBroker`` that its parts (presence, history:
    separate modules, to keep each readable) use. Set up by ``RedisBroker.__init__``."""

    config: BrokerConfig
    node: str
    keys: Keys
    statistics: BrokerStatistics
    _poke: Callable[[], None]
    _publish_cmd: bytes
    _ttl_ms: bytes
    _meta_ttl: float
    _down: str | None
    _scripts: dict[str, Any]
    _tables: dict[str, ChannelTable]
    _apps: dict[str, App]
    _wanted: dict[bytes, tuple[str, str]]
    # presence (PresenceMixin._init_presence)
    _seen: dict[bytes, dict[str, Any]]
    """Per subscribed channel: the members (id -> info) this node's clients were told of
    by presence events; after an outage, compared with the cluster's listing."""
    _touched: dict[bytes, set[str]] | None
    """While a resync reads listings: the members events changed meanwhile."""
    _joining: dict[tuple[str, str, str], Op]
    """Joins being written, by (app, channel, connection): their answers wait."""
    # history (HistoryMixin._init_history)
    _holds: dict[bytes, list[list[Entry]]]
    """Per channel: the live messages held for joins being recovered (``prepare_join``)."""
    _catching: dict[bytes, dict[str, tuple[Member, int]]]
    """Per channel: members that joined with a replay up to an offset (``catch_up``)."""
    _last: dict[bytes, tuple[str, int]]
    """Per channel with history: the (epoch, offset) of the last message delivered here."""
    _filling: dict[bytes, list[tuple[str, int, bytes]]]
    _through: dict[bytes, tuple[str, int]]

    def _enqueue(self, op: Op) -> bool:
        raise NotImplementedError

    def _transitions(self, app: str, channel: str, result: Any) -> None:
        raise NotImplementedError

    async def _call(self, send: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def want(self, app: str, channel: str) -> None:
        raise NotImplementedError

    def unwant(self, app: str, channel: str) -> None:
        raise NotImplementedError

    async def joined(self, app: str, channel: str, conn: str) -> None:
        raise NotImplementedError

    async def members(
        self, app: str, channel: str, after: int | None, limit: int
    ) -> tuple[list[Any], int | None]:
        raise NotImplementedError
