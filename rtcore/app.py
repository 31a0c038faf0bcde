"""One app (tenant): its channel table and the operations on it (sans-IO).

Client sessions, the host application (in-process API) and, later, the server API all go
through these methods, so a message looks the same whoever sent it. Each operation encodes
and frames its message once and fans the same bytes out through the channel table.

Two clocks are passed in, never read: ``now`` is monotonic seconds (revocation TTLs and other
expiry of local state), ``wall`` is Unix time (the ``ts`` users see).
"""

from __future__ import annotations

from typing import Any

import attrs

from rtcore.broker import Broker, MemoryBroker, Publication, Target
from rtcore.config import AppConfig
from rtcore.history import Position, Recovery, Retention, Slice, decide_recovery
from rtcore.hub import ChannelTable, Member
from rtcore.limiter import Chain
from rtcore.observe import NULL_OBSERVER, AppStatistics, Observer
from rtcore.outbox import Pending
from rtcore.presence import PresenceBatcher
from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f


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


def framed(frame: Any) -> bytes:
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
        self.broker.register(self.name, self.table)
        self._pending = pending
        self._ids = ids
        self.presence = PresenceBatcher(pending, self._publish_diff)
        """Presence diffs awaiting the next flush pass (or a message to their channel)."""
        self._retentions: dict[str, Retention | None] = {}
        """Channel -> its history retention (a cache of channel-rule lookups)."""
        self._history = any(r.history_size for r in settings.channels)
        """Whether any channel rule keeps history (else messages skip the lookup)."""
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
    ) -> UserEventOutcome:
        """Deliver a user event to ``user``'s connections only, then apply what it means:
        a sign-out ends that session of ``user``; a password change may end the user's other
        sessions; a profile update may replace the user's member profiles."""
        frame = framed(f.UserEvent(kind, session, data, int(wall * 1000)))
        conns = self.table.user(user)
        delivered = self._publish(Target.USER, user, frame)
        self.statistics.user_event_deliveries += delivered
        sid = session.get("id") if session else None
        ended: list[str] = []
        if kind == "signout" and isinstance(sid, str):
            ended = [sid]
        elif kind == "password_change" and self.settings.end_sessions_on_password_change:
            ended = sorted({m.session for m in conns.values() if m.session and m.session != sid})
        elif kind == "profile_update" and self.settings.profile_updates_member and data is not None:
            for member in list(conns.values()):
                self.update_profile(member, data, echo=True)
        closing = [m for s in ended for m in self.end_session(user, s, now)]
        return UserEventOutcome(delivered, ended, closing)

    def end_session(self, user: str, session: str, now: float) -> list[Member]:
        """Refuse ``user``'s ``session`` for ``revocation_ttl`` seconds from ``now``
        (monotonic); returns its connections, which must be closed."""
        self._revoked[(user, session)] = now + self.settings.revocation_ttl
        return list(self.table.session(user, session).values())

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
        # A channel with history: the broker's store gives the message its offset and epoch
        # and frames it, once (rtcore.history). Other messages pay one bool test.
        retention = self.retention(channel) if self._history and channel is not None else None
        if retention is None:
            payload, position = framed(frame), None
        else:
            assert channel is not None
            entry = self.broker.history.publish(self.name, channel, frame, retention, wall)
            payload, position = entry.data, Position(entry.msg.epoch or "", entry.offset)
        count = self._publish(target, channel, payload, skip)
        stats = self.statistics  # per publication, never per recipient
        stats.messages += 1
        stats.message_deliveries += count
        return Delivery(mid, ts, count, position)

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
        """Read ``channel``'s history (see :meth:`rtcore.history.HistoryStore.read`). The one
        place the app reads its broker's history: requests, recovery and the server API."""
        return self.broker.history.read(
            self.name, channel, since=since, limit=limit, reverse=reverse, wall=wall
        )

    def recover(
        self, channel: str, since: Position, max_messages: int, max_bytes: int, wall: float
    ) -> Recovery:
        """Whether a client at ``since`` can have every message of ``channel`` after it, and
        those messages (rtcore.history.decide_recovery)."""
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
        self.statistics.bytes_queued += len(data) * count  # per publication
        return count

    # -- presence -------------------------------------------------------------------------

    def connect(self, member: Member) -> None:
        self.table.connect(member)

    def disconnect(self, member: Member) -> None:
        """Drop the member; every channel it was in hears it leave."""
        for channel, last in self.table.disconnect(member):
            self._presence("member_leave", channel, member, None, last=last)

    def join(self, member: Member, channel: str, echo: bool) -> bool:
        """Join; returns False if already a member (then nothing is sent)."""
        first = self.table.join(member, channel)
        if first is None:
            return False
        self._presence("member_join", channel, member, None if echo else member, first=first)
        return True

    def leave(self, member: Member, channel: str, echo: bool) -> bool:
        """Leave; returns False if not a member (then nothing is sent).

        With echo, the leaver hears its own leave: as a ``member_leave``, or as a one-entry
        ``presence`` diff if it takes diffs (it is no longer among the channel's receivers).
        """
        last = self.table.leave(member, channel)
        if last is None:
            return False
        self._presence("member_leave", channel, member, None, last=last)
        if echo and self.sees_presence(member, channel) and self.presence_events(channel):
            own: f.PresenceDiff | f.MemberEvent
            if member.diffs:
                own = f.PresenceDiff(channel, leaves=[{**member.info(), "last": last}])
            else:
                own = f.MemberEvent("member_leave", channel, member.info(), last=last)
            self._pending.push(member.outbox, framed(own))
        return True

    def sees_presence(self, member: Member, channel: str) -> bool:
        """Whether ``member`` may list ``channel``'s members and receive its presence."""
        policy = self.settings.presence_policy(channel)
        return policy == "anyone" or (policy == "signed_in" and member.user is not None)

    def presence_events(self, channel: str) -> bool:
        """Whether ``channel``'s members get presence events at all (its channel rule)."""
        return self.settings.presence_events(channel)

    def update_profile(self, member: Member, profile: Any, echo: bool) -> int:
        """Store the profile; each channel of the member hears of the update."""
        member.profile = profile
        for channel in member.channels:
            self._presence("member_update", channel, member, None if echo else member)
        return len(member.channels)

    def _presence(
        self,
        kind: str,
        channel: str,
        member: Member,
        skip: Member | None,
        first: bool | None = None,
        last: bool | None = None,
    ) -> None:
        """Publish one presence event: at once as a ``member_*`` frame to the members who
        take those, and into the channel's pending diff for those who take diffs (who get
        it whatever ``skip`` says: a diff is the same frame for every member)."""
        if not self.settings.presence_events(channel):
            return
        info = member.info()
        if self.table.presence_receivers(channel, diffs=False):
            data = framed(f.MemberEvent(kind, channel, info, first=first, last=last))
            delivered = self._publish(Target.PRESENCE, channel, data, skip)
            self.statistics.presence_deliveries += delivered
        if self.table.takes_diffs(channel):
            diff = self.presence.channel(channel)
            if kind == "member_join":
                diff.join(info, first)
            elif kind == "member_leave":
                diff.leave(info, last)
            else:
                diff.update(info)

    def _publish_diff(self, channel: str, frame: f.PresenceDiff) -> int:
        delivered = self._publish(Target.PRESENCE_DIFFS, channel, framed(frame))
        self.statistics.presence_deliveries += delivered  # per diff frame, not per member
        return delivered
