"""Presence with the Redis broker: a part of :class:`RedisBroker`.

Join, leave and update run a script on the channel's presence keys that publishes the event
with the cluster's ``first``/``last``; every node turns it into its own members' frames. A
node refreshes its deadline in each channel it holds every ``presence_refresh`` seconds (any
script on the channel removes the members of nodes past their deadline, publishing their
leaves). After an outage a node re-publishes its members (``SYNC``) and tells its own
members what they missed, comparing what they were told with the cluster's listing.

A member that never left is never reported leaving (protocol.md §5.5): a member missing from
the listing right after an outage may belong to a node that has not re-published yet, so its
leave waits one ``presence_ttl`` (the bound on a dead node's members) and a second listing;
and a re-published join of a member this node's members know already is an update (its
profile changed meanwhile) or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import coredis
import trio

from rtcore.core.members import Member
from rtcore.engines.base import BrokerUnavailable
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.ops import PIPELINE_MAX, BrokerCore, Op


class PresenceMixin(BrokerCore):
    """Presence methods of :class:`RedisBroker`, and their state."""

    def _init_presence(self) -> None:
        self._seen = {}
        self._touched = None
        self._joining = {}
        self._dirty = {}

    def presence(self, app: str, kind: str, channel: str, member: Member, skip: str | None) -> None:
        info = member.info(channel)
        local = self._local_presence(app, kind, channel, member.user, info, skip)
        key = (app, channel, member.id)
        if kind == "member_leave" and (self._down is not None or key in self._joining):
            # Its join may still land late (a broken link): set right once past its deadline.
            deadline = self._redis_ms(trio.current_time() + self.config.command_timeout)
            self._dirty[(app, channel)] = max(deadline, self._dirty.get((app, channel), 0))
        if self._down is not None:
            self.statistics.dropped += 1
            local()
            return
        keys = self.keys.presence(app, channel)
        head = [self._publish_cmd, self.node.encode(), self._ttl_ms, channel.encode()]
        conn = member.id.encode()
        if kind == "member_join":  # refused by the script past its deadline (a late write)
            blob = rp.member_blob(member.user, info)
            deadline = self._redis_ms(trio.current_time() + self.config.command_timeout)
            args = [*head, conn, blob, (member.user or "").encode(), (skip or "").encode()]
            args.append(str(deadline).encode())
            script = "JOIN"
        elif kind == "member_leave":
            args, script = [*head, conn], "LEAVE"
        else:
            blob = rp.member_blob(member.user, info)
            args, script = [*head, conn, blob, (skip or "").encode()], "UPDATE"
        op = Op(lambda p: self._scripts[script](keys=keys, args=args, client=p), local)
        op.settled = lambda result: self._transitions(app, channel, result)
        if kind == "member_join":
            op.done, op.key = trio.Event(), key
            self._joining[op.key] = op
        self._enqueue(op)

    def _local_presence(
        self,
        app: str,
        kind: str,
        channel: str,
        user: str | None,
        info: Any,
        skip: str | None,
    ) -> Callable[[], None]:
        """The event for this node's members only (Redis away): ``first``/``last`` as this
        node sees them."""

        def deliver() -> None:
            count = self._tables[app].user_connections(channel, user)
            flag = count == 1 if kind == "member_join" else count == 0
            self._saw(self.keys.channel_pubsub(app, channel), kind, info)
            self._apps[app].presence_event(kind, channel, info, flag, skip)
            self._poke()

        return deliver

    def _transitions(self, app: str, channel: str, result: Any) -> None:
        """The cluster transitions a presence script of this node made (``'o'``, ``'v'``,
        ``'a:<user>'``, ``'r:<user>'``): reported here only, so once for the cluster."""
        target = self._apps.get(app)
        if target is None or not isinstance(result, list):
            return
        for item in result:
            if isinstance(item, bytes):
                target.cluster_transition(channel, item.decode(errors="replace"))

    def _republished(self, channel: bytes, kind: str, info: Any, flag: Any) -> str | None:
        """The event this node's members get for a presence envelope: a join of a member
        they know already (another node's SYNC after an outage) becomes ``member_update`` if
        the profile changed, else nothing; a SYNC's update (``flag`` true) they already had
        is nothing too."""
        seen = self._seen.get(channel)
        member = info.get("id") if isinstance(info, dict) else None
        if seen is None or member not in seen:
            return kind
        if kind == "member_join":
            return "member_update" if seen[member] != info else None
        if kind == "member_update" and flag is True and seen[member] == info:
            return None
        return kind

    def _saw(self, channel: bytes, kind: str, info: Any) -> None:
        """Keep what this node's members were told of ``channel``'s presence."""
        if channel not in self._wanted:
            return
        seen = self._seen.setdefault(channel, {})
        member = info.get("id") if isinstance(info, dict) else None
        if member is None:
            return
        if kind == "member_leave":
            seen.pop(member, None)
        else:
            seen[member] = info
        if self._touched is not None:
            self._touched.setdefault(channel, set()).add(member)

    async def _refresh(self, client: Any) -> None:
        """The node's presence heartbeat in every channel it holds (which also removes the
        members of nodes that stopped refreshing)."""
        while True:
            await trio.sleep(self.config.presence_refresh)
            await self._measure(client)
            await self._sync_dirty(client)
            for app, table in list(self._tables.items()):
                channels = list(table.channels())
                for i in range(0, len(channels), PIPELINE_MAX):
                    async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                        sent = []
                        for name in channels[i : i + PIPELINE_MAX]:
                            args = [self._publish_cmd, self.node.encode(), self._ttl_ms]
                            request = self._scripts["REFRESH"](
                                keys=self.keys.presence(app, name),
                                args=[*args, name.encode()],
                                client=pipe,
                            )
                            sent.append((name, request))
                    await self._tell_transitions(app, sent)

    async def _resync_members(self) -> None:
        """After an outage: tell this node's members what changed in their channels while
        the node was away (pub/sub delivers nothing to a node that is not subscribed). Leaves
        wait a ``presence_ttl`` for the other nodes to re-publish their members."""
        try:
            self._touched = {}
            withheld = await self._resync_pass(list(self._wanted), leaves=False)
            if withheld:
                await trio.sleep(self.config.presence_ttl)
                self._touched = {}
                await self._resync_pass(withheld, leaves=True)
        except BrokerUnavailable:
            return  # away again: the next reconnection resyncs
        finally:
            self._touched = None

    async def _resync_pass(self, channels: list[bytes], leaves: bool) -> list[bytes]:
        """One listing of each of ``channels`` told to this node's members; the channels
        where a member is missing, whose leaves were withheld (``leaves`` false)."""
        withheld = []
        for ch in channels:
            if ch not in self._wanted:
                continue  # its last member here left meanwhile
            app, channel = self._wanted[ch]
            listed = await self._listing(app, channel)
            if ch not in self._wanted:
                continue
            seen = self._seen.setdefault(ch, {})
            touched = (self._touched or {}).get(ch, set())
            for kind, info, flag in listing_diff(seen, listed, touched):
                if kind == "member_leave" and not leaves:
                    withheld.append(ch)
                    continue
                self._saw(ch, kind, info)
                self._apps[app].presence_event(kind, channel, info, flag, None, len(listed))
            self._poke()
        return list(dict.fromkeys(withheld))

    async def _listing(self, app: str, channel: str) -> list[Any]:
        """Every member of ``channel`` in the cluster (BrokerUnavailable: Redis away)."""
        listed: list[Any] = []
        after: int | None = None
        while True:
            page, after = await self.members(app, channel, after, 1000)
            listed += page
            if after is None:
                return listed

    async def _sync_dirty(self, client: Any) -> None:
        """Channels where a join was taken back while its write may still land (a refused
        join, protocol.md §6): once Redis's clock is past their joins' deadlines (the join
        script refuses them after), make the cluster's entries this node's members."""
        while self._dirty:
            (app, channel), deadline = max(self._dirty.items(), key=lambda item: item[1])
            now = await self._redis_now(client, self.keys.presence(app, channel)[0])
            wait = deadline - now
            if wait >= 0:
                await trio.sleep((wait + 1) / 1000)
                continue
            dirty, self._dirty = self._dirty, {}
            for app, channel in dirty:
                group = self._tables[app].members(channel)
                await self._sync_channels(client, app, [(channel, group)])

    async def _sync_presence(self, client: Any) -> None:
        """Make the cluster's presence hold exactly this node's members (after an outage)."""
        for app, table in self._tables.items():
            await self._sync_channels(client, app, list(table.channels().items()))

    async def _sync_channels(self, client: Any, app: str, channels: list[Any]) -> None:
        """SYNC each ``(channel, its members here)``: the node's entries become those (and
        the cluster transitions that makes are told, ``_tell_transitions``)."""
        for i in range(0, len(channels), PIPELINE_MAX):
            sent: list[tuple[str, Any]] = []
            async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                for name, group in channels[i : i + PIPELINE_MAX]:
                    args: list[Any] = [
                        self._publish_cmd,
                        self.node.encode(),
                        self._ttl_ms,
                        name.encode(),
                    ]
                    for m in group.values():
                        blob = rp.member_blob(m.user, m.info(name))
                        args += [m.id.encode(), blob, (m.user or "").encode()]
                    script = self._scripts["SYNC"]
                    keys = self.keys.presence(app, name)
                    sent.append((name, script(keys=keys, args=args, client=pipe)))
            await self._tell_transitions(app, sent)

    async def _tell_transitions(self, app: str, sent: list[tuple[str, Any]]) -> None:
        """The transitions of pipelined presence scripts (a script's error: none)."""
        for name, request in sent:
            try:
                result = await request
            except coredis.exceptions.ResponseError:
                continue
            self._transitions(app, name, result)


def listing_diff(
    seen: dict[str, Any], listed: list[Any], touched: set[str]
) -> list[tuple[str, Any, bool | None]]:
    """The presence events that take ``seen`` (what a node's members were told) to
    ``listed`` (the cluster's members now), skipping members events ``touched`` since the
    listing was asked for: ``(kind, info, first or last)``."""
    now = {info["id"]: info for info in listed}
    users: dict[str | None, int] = {}
    for info in listed:
        users[info.get("user")] = users.get(info.get("user"), 0) + 1
    events: list[tuple[str, Any, bool | None]] = []
    for member, info in seen.items():
        if member not in now and member not in touched:
            user = info.get("user")
            events.append(("member_leave", info, user is None or users.get(user, 0) == 0))
    for member, info in now.items():
        if member in touched:
            continue
        if member not in seen:
            user = info.get("user")
            events.append(("member_join", info, user is None or users[user] == 1))
        elif seen[member] != info:
            events.append(("member_update", info, None))
    return events


def page_of(rows: list[bytes], limit: int) -> tuple[list[Any], int | None]:
    """The MEMBERS script's ``[seq, blob, ...]`` as ``(infos, next cursor)``."""
    pairs = [(int(rows[i]), rows[i + 1]) for i in range(0, len(rows), 2)]
    more = len(pairs) > limit
    pairs = pairs[:limit]
    infos = [rp.unpack_member(blob)[1] for _, blob in pairs if blob]
    return infos, (pairs[-1][0] if more and pairs else None)
