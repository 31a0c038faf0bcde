"""What the Redis broker's parts share: its write queue entries and its counters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from coredis._utils import hash_slot

from rtcore.config.model import BrokerConfig
from rtcore.core.history import Entry
from rtcore.core.members import ChannelTable, Member
from rtcore.engines.redis.keys import Keys

if TYPE_CHECKING:
    from rtcore.core.app import App

REDIS_NOW = "local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000)"
"""Redis's clock in ms (as ``lua/clock.lua`` reads it)."""

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
    refused: int = 0
    """History publishes refused (``broker_unavailable``): provably not applied."""
    unknown: int = 0
    """History publishes whose outcome was lost with a restarted Redis (``outcome_unknown``)."""


@attrs.frozen
class Settle:
    """What settles a history publish whose link to Redis broke before its answer came."""

    marker: bytes
    """The key the script sets when it applies the publish."""
    deadline: int
    """Redis clock, ms: the script refuses to apply it later."""
    run: str
    """The Redis run id it was sent to (a restart may lose the marker)."""


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
    settle: Settle | None = None
    """A history publish: its outcome is settled, not failed, if the link breaks."""

    settled: Callable[[Any], None] | None = None
    """Given the result once written (a presence script's cluster transitions)."""

    finished: bool = False
    """Its answer came (or it failed): a broken link must not fail it again."""

    def finish(self, result: Any = None, failed: str | None = None) -> None:
        self.result, self.failed, self.finished = result, failed, True
        if failed is None and self.settled is not None:
            self.settled(result)
        if self.done is not None:
            self.done.set()


async def shard_keys(client: Any, prefix: str) -> list[bytes]:
    """A key in each slot range of a Redis Cluster (a command on it runs on that shard)."""
    keys = []
    for start, end in await client.cluster_slots():
        for i in range(100_000):  # a range of n slots is hit within ~16384/n tries
            key = f"{prefix}:clock:{i}".encode()
            if start <= hash_slot(key) <= end:
                keys.append(key)
                break
    return keys


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
    _queue: Any
    _published: int
    """History publishes so far (their ids: node and count)."""
    _redis_offset: float
    """Redis clock (ms) minus this node's monotonic clock (ms): a lower bound."""
    _run: str
    """The run id of the Redis this node is connected to."""
    _unsettled: list[Op]
    """History publishes on their way when the link broke, in order: to settle."""
    _dirty: dict[tuple[str, str], int]
    """(app, channel) -> a deadline (Redis clock, ms): a join there was taken back while
    its write may still land; synchronised once Redis's clock is past it."""

    async def _redis_now(self, client: Any, key: bytes | None = None) -> int:
        """Redis's clock, ms (coredis's ``time()`` drops the sub-second part); in a cluster,
        that of the shard holding ``key``."""
        return int(await client.eval(REDIS_NOW, [] if key is None else [key], []))

    async def _measure(self, client: Any) -> None:
        """The Redis clock's offset from this node's, a lower bound: in a cluster, the
        least over the shards (each script runs on the clock of its channel's shard)."""
        if not self.config.cluster:
            self._measured(await self._redis_now(client))
            return
        lowest = math.inf
        for key in await shard_keys(client, self.keys.prefix):
            redis_ms = await self._redis_now(client, key)
            lowest = min(lowest, redis_ms - trio.current_time() * 1000)
        if lowest != math.inf:
            self._redis_offset = lowest

    def _redis_ms(self, monotonic: float) -> int:
        """``monotonic`` (this node's clock) on the Redis clock, never later than it is: the
        offset is a lower bound (measured as Redis's time minus the time its answer came)."""
        return int(monotonic * 1000 + self._redis_offset)

    def _measured(self, redis_ms: int) -> None:
        """Redis's clock read ``redis_ms`` before now: the offset's newest lower bound (one
        Redis; a cluster's shards each have their clock: ``_measure`` reads them all)."""
        if not self.config.cluster:
            self._redis_offset = redis_ms - trio.current_time() * 1000

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
