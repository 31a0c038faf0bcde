"""The Redis broker (``[broker] kind = "redis"``): many nodes, one server. The trio side.

What crosses Redis is sans-IO: the key layout in ``keys``, the pub/sub envelopes in
``envelopes``, the Lua scripts in ``lua/`` (loaded by ``scripts``). This module runs them,
with its presence and history parts in ``presence`` and ``history`` (mixins over the state
declared in ``ops.BrokerCore``, each initialising its own) and its connections made by
``connect``. One
connection multiplexes commands; a second one is the pub/sub subscriber (coredis on trio,
through anyio). Theory of operation:

* **Publications** (channel messages, broadcasts) are queued -- the core never waits -- and
  a pump task writes everything queued since its last round in one pipeline: one Redis
  publish per message, whatever the number of subscribers. Every node, the publishing one
  included, delivers them as they come back from the subscription, so all members on all
  nodes see one order. The ``recipients`` a sender is told are this node's.
* **Subscriptions** follow the channel table: a node subscribes to a channel when its first
  local member joins and unsubscribes when its last leaves (a reconcile task, so a quick
  leave-and-rejoin never races); every node subscribes to each app's channel (broadcasts,
  control). A join is answered once its channel's subscription is live.
* **Presence** is the cluster's: join, leave and update run a script that updates the
  channel's presence keys and publishes the event with the cluster's ``first``/``last``; each
  node turns it into its own members' ``member_*`` frames and diffs. Every node refreshes
  its deadline in each channel it holds every ``presence_refresh`` seconds; any script on a
  channel first removes the members of nodes whose deadline passed (a node killed without
  cleaning up), publishing their leaves -- so they leave within ``presence_ttl +
  presence_refresh``.
* **Control**: server-API operations (user events, disconnects, revocations) are applied by
  the node that got them and forwarded to the others; revocations are also stored with their
  expiry, so a node that starts later refuses them too.
* **Redis trouble**: any failure marks the broker down (``health()``: ``/readyz`` and
  ``rtcore_broker_up``), logged once per outage. While down the node is an island: it
  delivers publications and presence to its own members only, answers cluster-wide requests
  ``broker_unavailable`` at once, and queues nothing (what it could not forward is counted).
  It reconnects with capped exponential backoff and jitter, resubscribes, reloads
  revocations and re-publishes its members (``SYNC``), so the cluster's presence converges.

Bounded: the write queue holds at most ``max_queued`` operations (beyond: local delivery
only, counted as dropped); pub/sub messages are handled as they arrive.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import coredis
import trio

from rtcore import operations as api
from rtcore.config.model import BrokerConfig
from rtcore.core.limits.limiter import Refusal, Rule
from rtcore.core.members import ChannelTable, Member
from rtcore.engines.base import BrokerUnavailable, Publication, Target, local_count
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis import scripts
from rtcore.engines.redis.connect import connect
from rtcore.engines.redis.gaps import GapMixin
from rtcore.engines.redis.history import HistoryMixin
from rtcore.engines.redis.keys import Keys
from rtcore.engines.redis.ops import PIPELINE_MAX, BrokerStatistics, Op
from rtcore.engines.redis.presence import PresenceMixin, page_of
from rtcore.engines.redis.subscriber import receive_batch
from rtcore.observe.throttled_log import ThrottledLog

if TYPE_CHECKING:
    from rtcore.core.app import App
    from rtcore.protocol.close import Close

log = logging.getLogger("rtcore.engines.base")

SUBSCRIBE_MAX = 500
"""Channels per SUBSCRIBE command."""
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
"""Seconds between reconnection attempts: doubling from the first, capped, with jitter."""


class RedisBroker(PresenceMixin, HistoryMixin, GapMixin):
    """A shared broker over Redis (see the module docstring).

    Args:
        config: ``[broker]``.
        node: this node's id (a new one per process: a restarted node resurrects nothing).
        close_members: closes connections a control operation ended (the server's).
        poke: wakes the flusher after deliveries.
        clock: ``(monotonic now, Unix wall)``.
    """

    shared = True

    def __init__(
        self,
        config: BrokerConfig,
        node: str,
        *,
        close_members: Callable[[list[tuple[Member, Close]]], None],
        poke: Callable[[], None],
        clock: Callable[[], tuple[float, float]],
        meta_ttl: float = 86_400.0,
    ) -> None:
        self.config = config
        self.node = node
        self.keys = Keys(config.prefix)
        self.statistics = BrokerStatistics()
        self._close_members = close_members
        self._poke = poke
        self._clock = clock
        self._publish_cmd = b"SPUBLISH" if config.cluster else b"PUBLISH"
        self._ttl_ms = str(int(config.presence_ttl * 1000)).encode()
        self._tables: dict[str, ChannelTable] = {}
        self._apps: dict[str, App] = {}
        self._app_channels: dict[bytes, str] = {}
        self._wanted: dict[bytes, tuple[str, str]] = {}
        """Pub/sub channel -> (app, channel) for channels with local members."""
        self._subscribed: set[bytes] = set()
        self._sub_waiters: dict[bytes, trio.Event] = {}
        self._subs_changed = trio.Event()
        self._queue: deque[Op] = deque()
        self._inflight: list[Op] = []
        self._work = trio.Event()
        self._drained = trio.Event()
        self._down: str | None = "not connected yet"
        self._run = ""
        self._scripts: dict[str, Any] = {}
        self._warn = ThrottledLog(log)
        self._init_presence()
        self._init_history(meta_ttl)
        self._init_gaps()

    # -- the core's side (sync, never waits) --------------------------------------------------

    def register(self, app: str, table: ChannelTable, receiver: Any = None) -> None:
        self._tables[app] = table
        self._apps[app] = receiver
        self._app_channels[self.keys.app_pubsub(app)] = app
        self._subs_changed.set()

    @property
    def queued(self) -> int:
        """Writes waiting for Redis (bounded by ``max_queued``)."""
        return len(self._queue) + len(self._inflight)

    def health(self) -> str | None:
        return None if self._down is None else f"Redis: {self._down}"

    def publish(self, publication: Publication) -> int:
        app = self._apps[publication.app]
        if self._down is not None:
            self.statistics.dropped += 1
            self._island_sent(publication)
            return app.deliver_published(publication)
        count = local_count(self._tables[publication.app], publication)
        if publication.target is Target.CHANNEL:
            channel = self.keys.channel_pubsub(publication.app, publication.name or "")
        else:
            channel = self.keys.app_pubsub(publication.app)
        envelope = rp.message(
            self.node,
            publication.target.value,
            publication.name,
            publication.user,
            publication.skip,
            publication.data,
        )

        def here_only() -> None:  # not forwarded (the link broke, or the queue is full)
            self._island_sent(publication)
            app.deliver_published(publication)

        self._enqueue(Op(lambda p: self._publish(p, channel, envelope), here_only))
        return count

    def want(self, app: str, channel: str) -> None:
        self._wanted[self.keys.channel_pubsub(app, channel)] = (app, channel)
        self._subs_changed.set()

    def unwant(self, app: str, channel: str) -> None:
        ch = self.keys.channel_pubsub(app, channel)
        self._wanted.pop(ch, None)
        self._seen.pop(ch, None)
        self._last.pop(ch, None)
        self._through.pop(ch, None)
        self._subs_changed.set()

    def control(self, app: str, op: str, args: Any) -> None:
        if self._down is not None:
            self.statistics.dropped += 1
            self._warn.warning(
                trio.current_time(), "Redis is away: %s not forwarded to other nodes", op
            )
            return
        channel, envelope = self.keys.app_pubsub(app), rp.control(self.node, op, args)
        self._enqueue(Op(lambda p: self._publish(p, channel, envelope)))

    def revoke(self, app: str, user: str, session: str, until: float) -> None:
        self.control(app, "revoke", [user, session, until])
        if self._down is None:
            key, member = self.keys.revoked(app), f"{user}\0{session}".encode()
            score = int(until * 1000)
            self._enqueue(Op(lambda p: p.zadd(key, {member: score})))

    def _publish(self, pipe: Any, channel: bytes, envelope: bytes) -> Any:
        if self.config.cluster:
            return pipe.spublish(channel, envelope)
        return pipe.publish(channel, envelope)

    def _enqueue(self, op: Op) -> bool:
        """Queue a write; False (and its local part done) when the queue is full."""
        if len(self._queue) >= self.config.max_queued:
            self.statistics.dropped += 1
            self._warn.warning(
                trio.current_time(),
                "Redis write queue full (%d): delivering locally only",
                self.config.max_queued,
            )
            if op.fallback is not None:
                op.fallback()
            op.finish(failed="the Redis write queue is full")
            return False
        self._queue.append(op)
        self._work.set()
        return True

    # -- the core's side (awaited by deferred requests) ---------------------------------------

    async def joined(self, app: str, channel: str, conn: str) -> None:
        ch = self.keys.channel_pubsub(app, channel)
        while self._down is None and ch in self._wanted and ch not in self._subscribed:
            await self._sub_waiters.setdefault(ch, trio.Event()).wait()
        op = self._joining.get((app, channel, conn))
        if op is not None and op.done is not None:
            await op.done.wait()  # the cluster lists it from now on
            if op.result == -1:  # the script refused it: past its deadline
                raise BrokerUnavailable("Redis took the join after its deadline: not joined")

    async def take(self, app: str, client_key: str, rules: list[Rule]) -> Refusal | None:
        """One round trip (pipelined with this node's other writes) per limited request."""
        if self._down is not None:
            raise BrokerUnavailable(f"Redis is unreachable ({self._down})")
        keys = [self.keys.bucket(app, client_key, rule.name) for rule in rules]
        args: list[Any] = [len(rules)]
        for rule in rules:
            args += [rule.capacity, rule.refill_per_second / 1000]
        result = await self._call(lambda p: self._scripts["TAKE"](keys=keys, args=args, client=p))
        refused, wait_ms = int(result[0]), int(result[1])
        if refused == 0:
            return None
        rule = rules[refused - 1]
        return Refusal(rule.name, rule.error_message, wait_ms / 1000)

    async def _call(self, send: Callable[[Any], Any]) -> Any:
        """A write whose answer is awaited, in order with this node's other writes."""
        op = Op(send)
        op.done = trio.Event()
        if not self._enqueue(op):
            raise BrokerUnavailable("the Redis write queue is full")
        await op.done.wait()
        if op.failed is not None:
            raise BrokerUnavailable(op.failed)
        return op.result

    async def members(
        self, app: str, channel: str, after: int | None, limit: int
    ) -> tuple[list[Any], int | None]:
        if self._down is not None:
            raise BrokerUnavailable(f"Redis is unreachable ({self._down})")
        keys = self.keys.presence(app, channel)
        args = [
            self._publish_cmd,
            self.node.encode(),
            self._ttl_ms,
            channel.encode(),
            b"-inf" if after is None else str(after).encode(),
            str(limit).encode(),
        ]
        # Through the write queue: after this node's earlier writes (read your writes).
        found = await self._call(lambda p: self._scripts["MEMBERS"](keys=keys, args=args, client=p))
        self._transitions(app, channel, found[0])
        return page_of(found[1], limit)

    # -- the trio side -------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis until cancelled; reports started after the first attempt
        (the node serves, degraded, while Redis is away)."""
        started = False
        backoff = BACKOFF_FIRST
        while True:
            try:
                async with connect(self.config, self.node) as (client, pubsub):
                    await self._on_connected(client, pubsub)
                    backoff = BACKOFF_FIRST
                    if not started:
                        task_status.started()
                        started = True
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client)
                        nursery.start_soon(self._read, pubsub)
                        nursery.start_soon(self._reconcile, pubsub)
                        nursery.start_soon(self._refresh, client)
                        nursery.start_soon(self._settle, client)
                        nursery.start_soon(self._sync_dirty, client)
                        if self.statistics.reconnects:
                            self._tell_gaps()
                            nursery.start_soon(self._resync_members)
                            nursery.start_soon(self._fill_gaps)
            except* Exception as group:  # Redis or the link failed: degrade, retry (a
                # cancellation mixed in -- coredis's teardown may fail as it is cancelled --
                # is re-raised by except*)
                if trio.current_effective_deadline() != -math.inf:  # not shutting down
                    self._went_down(group)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def drain(self) -> None:
        """Wait until everything queued was written (a graceful shutdown's leaves); the
        caller bounds it."""
        while self._down is None and (self._queue or self._inflight):
            self._drained = trio.Event()
            await self._drained.wait()

    async def _on_connected(self, client: Any, pubsub: Any) -> None:
        self._scripts = {
            name: client.register_script(scripts.source(name)) for name in scripts.PARTS
        }
        channels = [*self._app_channels, *self._wanted]
        for i in range(0, len(channels), SUBSCRIBE_MAX):
            await pubsub.subscribe(*channels[i : i + SUBSCRIBE_MAX])
        self._subscribed = set(channels)
        self._run = str((await client.info("server")).get("run_id", ""))
        await self._measure(client)
        await self._load_revocations(client)
        await self._sync_presence(client)
        if self._down is not None and self.statistics.reconnects:
            log.warning("Redis is reachable again (%s): presence re-synchronised", self.config.url)
        self._down = None
        self._wake_subscribers()

    def _went_down(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {_reason(exc)}"
        if self._down is None:
            log.warning("Redis is unreachable (%s); serving this node's members only", reason)
            self.statistics.reconnects += 1
        self._down = reason
        # A history publish that may have been written is settled when Redis is back
        # (``_settle``): its outcome must be one, never "refused" and then applied.
        sent = [op for op in self._inflight if op.settle is not None and not op.finished]
        self._unsettled += sent
        failed = [o for o in [*self._inflight, *self._queue] if not o.finished and o not in sent]
        self._inflight, self._queue = [], deque()
        for op in failed:  # their local part, at least
            self.statistics.dropped += 1
            if op.fallback is not None:
                op.fallback()
            op.finish(failed=f"Redis is unreachable ({reason})")
        self._joining.clear()
        self._subscribed = set()
        self._wake_subscribers()
        self._drained.set()

    def _wake_subscribers(self) -> None:
        waiters, self._sub_waiters = self._sub_waiters, {}
        for event in waiters.values():
            event.set()

    async def _pump(self, client: Any) -> None:
        """Write what was queued, a pipeline per round: one flush window's publications
        travel together."""
        while True:
            if not self._queue:
                self._work = trio.Event()
                await self._work.wait()
            batch = [self._queue.popleft() for _ in range(min(PIPELINE_MAX, len(self._queue)))]
            self._inflight = batch
            async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                requests = [op.send(pipe) for op in batch]
            for op, request in zip(batch, requests, strict=True):
                try:
                    op.finish(await request)
                except coredis.exceptions.ResponseError as exc:  # a script's error: our bug
                    self._warn.warning(trio.current_time(), "Redis refused a write: %s", exc)
                    op.finish(failed=f"Redis refused it: {exc}")
                if op.key is not None:
                    self._joining.pop(op.key, None)
            self.statistics.published += len(batch)
            self._inflight = []
            self._drained.set()

    async def _read(self, pubsub: Any) -> None:
        """Dispatch what arrives, a batch per wake-up, then wake the flusher once: a burst
        goes out in few flush passes (redis_subscriber)."""
        while True:
            for message in await receive_batch(pubsub):
                if message.get("type") not in ("message", "smessage"):
                    continue
                self.statistics.received += 1
                try:
                    self._dispatch(message["channel"], message["data"])
                except rp.BadEnvelope as exc:
                    self.statistics.bad_envelopes += 1
                    self._warn.warning(
                        trio.current_time(), "skipped a message on %r: %s", message["channel"], exc
                    )
                except Exception:  # an error boundary: one bad envelope never stops the node
                    log.exception("handling a message from Redis failed")
            self._poke()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        envelope = rp.decode(data)
        app_name = self._app_channels.get(channel)
        if app_name is None:
            wanted = self._wanted.get(channel)
            if wanted is None:
                return  # unsubscribing from it: no member here any more
            app_name = wanted[0]
        app = self._apps[app_name]
        fields = envelope.fields
        if envelope.kind == rp.MESSAGE:
            target, name, user, skip, frame = fields
            app.deliver_published(Publication(app_name, Target(target), name, frame, skip, user))
        elif envelope.kind == rp.HISTORY:
            self._history_message(app, channel, fields)
        elif envelope.kind == rp.PRESENCE:
            kind, name, blob, flag, skip = fields[:5]
            members = fields[5] if len(fields) > 5 and type(fields[5]) is int else None
            _, info = rp.unpack_member(blob)
            event = self._republished(channel, kind.decode(), info, flag)
            if event is not None:
                self._saw(channel, event, info)
                app.presence_event(event, name.decode(), info, flag, rp.text(skip), members)
        elif envelope.node != self.node:  # control: the sending node applied it already
            op, args = fields
            if op == "gap":
                self._gap_control(app_name, args)
                return
            now, wall = self._clock()
            try:
                outcome = api.apply_control(app, op, args, now, wall)
            except ValueError as exc:
                raise rp.BadEnvelope(str(exc)) from exc
            self._close_members(outcome.closing)

    async def _reconcile(self, pubsub: Any) -> None:
        """Keep the subscriptions equal to the channels with local members."""
        while True:
            wanted = [*self._app_channels, *self._wanted]  # an app added by a reload too
            add = [ch for ch in wanted if ch not in self._subscribed][:SUBSCRIBE_MAX]
            drop = [
                ch
                for ch in self._subscribed
                if ch not in self._wanted and ch not in self._app_channels
            ][:SUBSCRIBE_MAX]
            if not add and not drop:
                self._subs_changed = trio.Event()
                await self._subs_changed.wait()
                continue
            if add:
                await pubsub.subscribe(*add)
                self._subscribed.update(add)
                for ch in add:
                    waiter = self._sub_waiters.pop(ch, None)
                    if waiter is not None:
                        waiter.set()
            if drop:
                await pubsub.unsubscribe(*drop)
                self._subscribed.difference_update(drop)

    async def _load_revocations(self, client: Any) -> None:
        now, wall = self._clock()
        for name, app in self._apps.items():
            key = self.keys.revoked(name)
            await client.zremrangebyscore(key, "-inf", int(wall * 1000))
            rows = await client.zrange(key, 0, -1, withscores=True)
            for member, score in rows:
                user, _, session = member.decode().partition("\0")
                app.revoked_until(user, session, score / 1000, now, wall)


def _reason(exc: BaseException) -> str:
    """A one-line reason, from the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
