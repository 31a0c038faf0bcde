"""One app (tenant): its channel table and the operations on it (sans-IO).

Client sessions, the host application (in-process API) and, later, the server API all go
through these methods, so a message looks the same whoever sent it. Each operation encodes
and frames its message once and fans the same bytes out through the channel table.

Two clocks are passed in, never read: ``now`` is monotonic seconds (revocation TTLs and other
expiry of local state), ``wall`` is Unix time (the ``ts`` users see).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from rtcore.config.model import AppConfig
from rtcore.core import webhooks
from rtcore.core.history import Recovery, Retention, Slice, decide_recovery
from rtcore.core.hooks.ports import NO_EVENTS, EventSink, HookCaller
from rtcore.core.limits.limiter import Chain
from rtcore.core.member_events import MemberEvents, member_event
from rtcore.core.members import ChannelTable, Member, admits
from rtcore.core.outbox import Pending
from rtcore.core.presence import PresenceBatcher
from rtcore.core.server_channels import ServerChannels
from rtcore.engines.base import Broker, Publication, Target, deliver_local
from rtcore.engines.memory import MemoryBroker
from rtcore.observe.events import NULL_OBSERVER, AppStatistics, Observer, removed
from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position


class MessageIds:
    """Unique message ids: ``<node>-<hex counter>``; the node id keeps nodes apart."""

    __slots__ = ("_node", "_next")

    def __init__(self, node: str) -> None:
        self._node = node
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self._node}-{self._next:x}"


@attrs.frozen
class Delivery:
    """What a send or broadcast did: its message id, timestamp and recipient count."""

    mid: str
    ts: int
    recipients: int
    position: Position | None = None
    """Its place in the channel's history (offset, epoch), for a channel with history."""
    sequenced: Callable[[], Awaitable[Position | None]] | None = None
    """With a shared broker, for a channel with history: waits until the cluster gave the
    message its place, and returns it; raises ``BrokerUnavailable`` when it provably was not
    published (then it is delivered nowhere); None: its outcome was lost (protocol.md §4.8)."""


RETENTION_CACHE = 4096
"""Channels whose history retention (a channel-rule lookup) an app remembers; the cache is
emptied when full and on every settings change."""


@attrs.frozen
class UserEventOutcome:
    """What a user event did: connections reached, sessions ended, connections to close."""

    delivered: int
    ended_sessions: list[str]
    """Session ids of the event's user that were ended."""
    closing: list[Member]


def framed(frame: f.ServerFrame) -> bytes:
    """A server frame encoded and WebSocket-framed, ready for any number of outboxes."""
    return wsframe.binary_frame(codec.encode(frame))


class App:
    """An app's channels, members and the operations clients and the host app perform."""

    def __init__(
        self,
        settings: AppConfig,
        pending: Pending,
        ids: MessageIds,
        broker: Broker | None = None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.name = settings.name
        self.statistics = AppStatistics()
        self.observer = observer
        """Told of refused and rate-limited requests (rtcore.observe)."""
        self.settings = settings
        self.limiter = Chain(settings.rate_limits)
        self.table = ChannelTable(pending, self._presence_policy)
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        """Where every publication goes (messages, presence, user events)."""
        self.broker.register(self.name, self.table, self)
        self._pending = pending
        self._ids = ids
        self.presence = PresenceBatcher(pending, self._publish_diff)
        """Presence diffs awaiting the next flush pass (or a message to their channel)."""
        self.member_events = MemberEvents(self.table, pending, self.statistics)
        """``member_*`` frames, paused in channels past ``member_events_max``."""
        self._retentions: dict[str, Retention | None] = {}
        """Channel -> its history retention (a cache of channel-rule lookups)."""
        self._history = any(r.history_size for r in settings.channels)
        """Whether any channel rule keeps history (else messages skip the lookup)."""
        self.hooks: HookCaller | None = None
        """The backend's hooks ([apps.hooks]; set by the server), None without them."""
        self.events: EventSink = NO_EVENTS
        """Where webhook events go ([[apps.webhooks]]; set by the server)."""
        self.server_channels = ServerChannels()
        """The channels the backend put users into (re-added at their hellos)."""
        self._revoked: dict[tuple[str, str], float] = {}
        """Ended sessions, as (user, session) -> until when (monotonic) their tokens are
        refused."""

    def _presence_policy(self, channel: str) -> str:
        return self.settings.presence_policy(channel)

    # -- user events and sessions ----------------------------------------------------------

    def publish_user_event(
        self,
        user: str,
        kind: str,
        session: dict[str, Any] | None,
        data: dict[str, Any] | None,
        now: float,
        wall: float,
        *,
        forward: bool = True,
    ) -> UserEventOutcome:
        """Deliver a user event to ``user``'s connections only, then apply what it means:
        a sign-out ends that session of ``user``; a password change may end the user's other
        sessions; a profile update may replace the user's member profiles.

        With a shared broker the event is applied here at once and forwarded (``forward``)
        to the other nodes, which apply it to their own connections: the counts returned are
        this node's (docs/scaling.md)."""
        if forward and self.broker.shared:
            self.broker.control(self.name, "user_event", [user, kind, session, data, wall])
        frame = framed(f.UserEvent(kind, session, data, int(wall * 1000)))
        conns = self.table.user(user)
        delivered = deliver_local(self.table, Publication(self.name, Target.USER, user, frame))
        self.statistics.user_event_deliveries += delivered
        self.statistics.bytes_queued += len(frame) * delivered
        sid = session.get("id") if session else None
        ended: list[str] = []
        if kind == "signout" and isinstance(sid, str):
            ended = [sid]
        elif kind == "password_change" and self.settings.end_sessions_on_password_change:
            ended = sorted({m.session for m in conns.values() if m.session and m.session != sid})
        elif kind == "profile_update" and self.settings.profile_updates_member and data is not None:
            for member in list(conns.values()):
                self.update_profile(member, data, echo=True)
        # Forwarded by the node the event came to; a password change is also forwarded by
        # each node that ended sessions of its own, so that every node refuses them.
        spread = forward or kind == "password_change"
        closing = [m for s in ended for m in self.end_session(user, s, now, wall, forward=spread)]
        return UserEventOutcome(delivered, ended, closing)

    def end_session(
        self, user: str, session: str, now: float, wall: float, *, forward: bool = True
    ) -> list[Member]:
        """Refuse ``user``'s ``session`` for ``revocation_ttl`` seconds from ``now``
        (monotonic; ``wall`` is the same instant in Unix time, what other nodes are told);
        returns its connections on this node, which must be closed. With a shared broker,
        every node refuses it and closes its connections (``forward``)."""
        ttl = self.settings.revocation_ttl
        self._revoked[(user, session)] = now + ttl
        if forward and self.broker.shared:
            self.broker.revoke(self.name, user, session, wall + ttl)
        return list(self.table.session(user, session).values())

    def revoked_until(self, user: str, session: str, until: float, now: float, wall: float) -> None:
        """Another node ended ``user``'s ``session`` until ``until`` (Unix time): refuse it
        here too, converted to this node's monotonic clock."""
        if until > wall:
            key = (user, session)
            self._revoked[key] = max(self._revoked.get(key, 0.0), now + (until - wall))

    def session_ended(self, user: str, session: str | None, now: float) -> bool:
        """Whether ``user``'s ``session`` was ended and is still refused at ``now``."""
        if session is None:
            return False
        key = (user, session)
        until = self._revoked.get(key)
        if until is not None and now >= until:
            del self._revoked[key]
            return False
        return until is not None

    def sweep(self, now: float) -> None:
        """Forget revocations past their time, and full limiter buckets (``now``: monotonic)."""
        for key in [k for k, until in self._revoked.items() if now >= until]:
            del self._revoked[key]
        self.limiter.sweep(now)

    def apply(self, settings: AppConfig) -> None:
        """New settings (a reload). Limiter buckets survive only for unchanged limiters."""
        assert settings.name == self.name
        self.settings = settings
        self.limiter.replace_rules(settings.rate_limits)
        self._retentions.clear()
        self._history = any(r.history_size for r in settings.channels)

    # -- messages -------------------------------------------------------------------------

    def send(
        self,
        channel: str,
        event: str,
        data: Any,
        *,
        wall: float,
        sender: Member | None = None,
        echo: bool = True,
    ) -> Delivery:
        """Deliver an event to the channel's members (the sender too if ``echo``); ``wall``
        (Unix time) becomes its ``ts``."""
        return self._deliver(Target.CHANNEL, channel, event, data, wall, sender, echo)

    def broadcast(
        self,
        event: str,
        data: Any,
        *,
        wall: float,
        sender: Member | None = None,
        echo: bool = True,
    ) -> Delivery:
        """Deliver an event to every connection of the app (the sender too if ``echo``)."""
        return self._deliver(Target.APP, None, event, data, wall, sender, echo)

    def _deliver(
        self,
        target: Target,
        channel: str | None,
        event: str,
        data: Any,
        wall: float,
        sender: Member | None,
        echo: bool,
    ) -> Delivery:
        # protocol.md §5.3: presence that happened before this message reaches every member
        # before it. One dict lookup when nothing is pending; no per-member work.
        if self.presence:
            if channel is None:
                self.presence.flush()
            else:
                self.presence.flush_channel(channel)
        mid, ts = self._ids(), int(wall * 1000)
        frame = f.Msg(channel, event, data, sender.id if sender else None, ts, mid)
        skip = None if echo else sender
        skip_id = None if skip is None else skip.id
        # A channel with history: the broker's store gives the message its offset and epoch
        # and frames it, once (rtcore.core.history). Other messages pay one bool test.
        retention = self.retention(channel) if self._history and channel is not None else None
        if retention is None:
            payload, position = framed(frame), None
        elif self.broker.shared:  # the cluster stores and delivers it (its position later)
            assert channel is not None
            return self._publish_history(channel, frame, retention, skip_id)
        else:
            assert channel is not None
            entry = self.broker.history.publish(self.name, channel, frame, retention, wall)
            payload, position = entry.data, Position(entry.epoch, entry.offset)
        count = self._publish(target, channel, payload, skip)
        stats = self.statistics  # per publication, never per recipient
        stats.messages += 1
        if not self.broker.shared:  # (a shared broker's are counted as they are delivered)
            stats.message_deliveries += count
        return Delivery(mid, ts, count, position)

    def _publish_history(
        self, channel: str, frame: f.Msg, retention: Retention, skip_id: str | None
    ) -> Delivery:
        """A message of a channel with history, with a shared broker: the cluster gives it its
        place, stores it and delivers it on every node (``deliver_published``)."""
        count, sequenced = self.broker.publish_history(
            self.name, channel, frame, retention, skip_id
        )
        self.statistics.messages += 1  # its deliveries: deliver_published, on each node
        return Delivery(frame.mid, frame.ts, count, None, sequenced)

    # -- history --------------------------------------------------------------------------

    def retention(self, channel: str) -> Retention | None:
        """How much history ``channel`` keeps (None: none), from its channel rule (cached)."""
        cache = self._retentions
        try:
            return cache[channel]
        except KeyError:
            if len(cache) >= RETENTION_CACHE:
                cache.clear()
            found = cache[channel] = self.settings.history_retention(channel)
            return found

    def history(
        self, channel: str, since: Position | None, limit: int, reverse: bool, wall: float
    ) -> Slice:
        """Read ``channel``'s history (see :meth:`rtcore.core.history.HistoryStore.read`). The one
        place the app reads its broker's history: requests, recovery and the server API."""
        return self.broker.history.read(
            self.name, channel, since=since, limit=limit, reverse=reverse, wall=wall
        )

    def recover(
        self, channel: str, since: Position, max_messages: int, max_bytes: int, wall: float
    ) -> Recovery:
        """Whether a client at ``since`` can have every message of ``channel`` after it, and
        those messages (rtcore.core.history.decide_recovery)."""
        if self.retention(channel) is None:
            return Recovery(False, "history_off", Position("", 0))
        found = self.history(channel, since, max_messages + 1, False, wall)
        return decide_recovery(since, found, max_messages, max_bytes)

    def _publish(
        self, target: Target, name: str | None, data: bytes, skip: Member | None = None
    ) -> int:
        count = self.broker.publish(
            Publication(self.name, target, name, data, skip.id if skip else None)
        )
        if not self.broker.shared:
            self.statistics.bytes_queued += len(data) * count  # per publication
        return count

    def deliver_published(self, publication: Publication) -> int:
        """A publication arriving from the broker (a shared broker delivers every channel
        message and broadcast this way, on every node, the publishing one included: one
        order for all). Presence pending for its channel goes first (protocol.md §5.3)."""
        if self.presence:
            if publication.target is Target.APP:
                self.presence.flush()
            elif publication.target is Target.CHANNEL:
                self.presence.flush_channel(publication.name or "")
        count = deliver_local(self.table, publication)
        # Counted where delivered: a node's deliveries include other nodes' messages, and
        # the publishing node counts its own once, as they come back.
        stats = self.statistics
        stats.message_deliveries += count
        stats.bytes_queued += len(publication.data) * count  # per publication
        return count

    # -- presence -------------------------------------------------------------------------

    def connect(self, member: Member) -> None:
        self.table.connect(member)

    def disconnect(self, member: Member) -> None:
        """Drop the member; every channel it was in hears it leave."""
        for channel, last in self.table.disconnect(member):
            self._left(channel, member, last)
        self.member_events.forget(member)

    def join(self, member: Member, channel: str, echo: bool) -> bool:
        """Join; returns False if already a member (then nothing is sent).

        With a shared broker the join is recorded in the cluster's presence, which computes
        ``first`` for the whole cluster and publishes the event to every node."""
        first = self.table.join(member, channel)
        if first is None:
            return False
        self.member_events.expect_reply(member)
        skip = None if echo else member.id
        if self.broker.shared:
            if len(self.table.members(channel)) == 1:
                self.broker.want(self.name, channel)
            self.broker.presence(self.name, "member_join", channel, member, skip)
        else:
            self.presence_event("member_join", channel, member.info(channel), first, skip)
            if len(self.table.members(channel)) == 1:
                self.cluster_transition(channel, "o")
            if first and member.user is not None:
                self.cluster_transition(channel, f"a:{member.user}")
        return True

    def _left(self, channel: str, member: Member, last: bool) -> None:
        """``member`` left ``channel`` on this node: tell the channel (the cluster's)."""
        if self.broker.shared:
            self.broker.presence(self.name, "member_leave", channel, member, None)
            if not self.table.members(channel):
                self.broker.unwant(self.name, channel)
        else:
            self.presence_event("member_leave", channel, member.info(channel), last, None)
            if last and member.user is not None:
                self.cluster_transition(channel, f"r:{member.user}")
            if not self.table.members(channel):
                self.cluster_transition(channel, "v")

    def cluster_transition(self, channel: str, transition: str) -> None:
        """A transition of ``channel`` for the whole cluster (made by this node): ``o``
        occupied, ``v`` vacated, ``a:<user>`` the user's first connection in it, ``r:<user>``
        their last left. Told to the webhooks (docs/hooks.md)."""
        webhooks.transition(self.events, channel, transition)

    def leave(self, member: Member, channel: str, echo: bool) -> bool:
        """Leave; returns False if not a member (then nothing is sent).

        With echo, the leaver hears its own leave: as a ``member_leave``, or as a one-entry
        ``presence`` diff if it takes diffs (it is no longer among the channel's receivers).
        """
        last = self.table.leave(member, channel)
        if last is None:
            return False
        self._left(channel, member, last)
        hears = self.presence_events(channel) and not self.member_events.silenced(member, channel)
        if echo and self.sees_presence(member, channel) and hears:
            own: f.PresenceDiff | f.MemberEvent
            info = member.info(channel)
            if member.diffs:
                own = f.PresenceDiff(channel, leaves=[{**info, "last": last}])
            else:
                own = f.MemberEvent("member_leave", channel, info, last=last)
            self._pending.push(member.outbox, framed(own))
        member.set_info(channel, None)  # what its channel token gave it there
        member.watch(channel, False)
        return True

    def remove(self, member: Member, channel: str, reason: str, message: str) -> bool:
        """The server takes ``member`` out of ``channel`` (protocol.md §5.6): the others hear
        it leave, the member gets a ``left`` frame saying why (and, with echo, its own leave
        first, as for a ``leave`` request). Returns False if it was not a member."""
        if not self.leave(member, channel, member.echo):
            return False
        self.tell(member, f.Left(channel, reason, message))
        removed(self, reason)
        return True

    def tell(self, member: Member, frame: f.ServerFrame) -> None:
        """Queue a frame for one member (``left``, ``joined``)."""
        self._pending.push(member.outbox, framed(frame))

    def sees_presence(self, member: Member, channel: str) -> bool:
        """Whether ``member`` may list ``channel``'s members and receive its presence."""
        return admits(self.settings.presence_policy(channel), member, channel)

    def presence_events(self, channel: str) -> bool:
        """Whether ``channel``'s members get presence events at all (its channel rule)."""
        return self.settings.presence_events(channel)

    def update_profile(self, member: Member, profile: Any, echo: bool) -> int:
        """Store the profile; each channel of the member hears of the update."""
        member.profile = profile
        skip = None if echo else member.id
        for channel in member.channels:
            if self.broker.shared:
                self.broker.presence(self.name, "member_update", channel, member, skip)
            else:
                self.presence_event("member_update", channel, member.info(channel), None, skip)
        return len(member.channels)

    def presence_event(  # noqa: PLR0913
        self, kind: str, channel: str, info: Any, flag: bool | None, skip: str | None,
        members: int | None = None,
    ) -> None:  # fmt: skip
        """Deliver one presence event to this node's members of ``channel``: at once as a
        ``member_*`` frame to those who take those (unless the channel has more than its
        ``member_events_max`` ``members``: rtcore.core.member_events), and into the
        channel's pending diff for those who take diffs (who get it whatever ``skip`` says:
        a diff is the same frame for every member). ``flag`` is ``first`` for a join,
        ``last`` for a leave; ``members`` the channel's member count after the event (the
        cluster's, from a shared broker; None: this node's).

        A shared broker calls this on every node for every event of the cluster."""
        if not self.settings.presence_events(channel):
            return
        events = self.member_events
        if self.table.presence_receivers(channel, diffs=False) or events.paused(channel):
            count = len(self.table.members(channel)) if members is None else members
            limit = self.settings.member_events_max(channel)
            events.publish(member_event(kind, channel, info, flag), skip, count, limit)
        if self.table.takes_diffs(channel):
            self.presence.record(kind, channel, info, flag)

    def _publish_diff(self, channel: str, frame: f.PresenceDiff) -> int:
        """A batch of presence for this node's diff-taking members (every node batches the
        cluster's events for its own members)."""
        data = framed(frame)
        publication = Publication(self.name, Target.PRESENCE_DIFFS, channel, data)
        delivered = deliver_local(self.table, publication)
        self.statistics.presence_deliveries += delivered  # per diff frame, not per member
        self.statistics.bytes_queued += len(data) * delivered
        return delivered
