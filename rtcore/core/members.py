"""The channel table of one app: who is in which channel, with what profile (sans-IO).

Theory of operation:

* A :class:`Member` is one connection. It is in the app's ``everyone`` group from hello to
  disconnect, and in one group per channel it joined. Groups are dicts keyed by member id in
  join order, which is what fan-out iterates and what member listings page through.
* A channel exists while it has members; the last leave deletes it.
* Member listings page through ``_order[channel]``, the members sorted by join sequence
  number (a ``SortedKeyList``: two pointers per member, no dict entry): finding the page after
  a cursor costs O(log n), reading it O(page), at any depth, and join/leave cost O(log n).
  The fan-out groups stay plain dicts.
* Presence goes to :meth:`ChannelTable.presence_group`: the channel group itself when
  everyone in it may see presence (the usual case: no extra structure), nobody, or the
  signed-in members. That last group is kept, per channel, only for channels whose presence
  policy is ``signed_in`` (built on first use, then maintained by join and leave), so message
  fan-out never pays for it.
* Presence receivers are split by how they take presence (protocol.md §5.2): one
  ``member_*`` frame per event, or batched ``presence`` diffs (``Member.diffs``).
  ``_diff_members[channel]`` counts a channel's diff-taking members; a channel where none
  or all of them do (the usual case) needs no extra structure: the presence group serves
  one kind and the other gets nobody. Only a mixed channel keeps ``_split[channel]``, the
  presence group divided by kind (built on first use, then kept by join and leave while the
  channel exists, rebuilt when the presence policy changes).
* ``_user_conns[(channel, user)]`` counts a signed-in user's connections in a channel, so join
  and leave events can say "first connection of this user" / "last connection of this user".
  Anonymous connections are their own user: always first and last.
* Fan-out appends one framed bytes object to every member's outbox and marks the group
  pending; it never copies per member and never waits.

Invariants (checked by the state-machine test): every member in a channel group lists that
channel in ``Member.channels`` and vice versa; no group is empty; ``_order[channel]`` holds
exactly the group's members, sorted by their join sequence numbers; a kept signed-in group
holds exactly the group's signed-in members; ``_diff_members[channel]`` counts the group's
members with ``diffs`` (absent when none); a kept split holds, under its policy, exactly the
group's members that policy admits, each on the side of its ``diffs``; user counts equal
the number of that user's members in the group; ``_sessions[(user, session)]`` holds
exactly the connected members with that user and session.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any

import attrs
from sortedcontainers import SortedKeyList

from rtcore.core.outbox import Outbox, Pending

_NO_INFO: Mapping[str, Any] = MappingProxyType({})


@attrs.define(eq=False, slots=True)
class Member:
    """One connection as the channel table sees it."""

    id: str
    user: str | None
    profile: Any
    outbox: Outbox
    echo: bool = True
    """The connection's default echo option (from its hello)."""
    session: str | None = None
    """The session id of the signed-in user's token (its ``sid`` claim): sign-outs and
    revocations name it together with the user."""
    channels: dict[str, int] = attrs.field(factory=dict)
    """Channel -> join sequence number (the paging cursor of member listings)."""
    diffs: bool = False
    """The connection takes presence as batched diffs (the ``presence_diffs`` feature)."""
    watching: AbstractSet[str] = frozenset()
    """Channels whose presence this connection may see under a per-connection presence
    value (``granted``, ``token``, ``hook``): decided at its join and at each refresh.
    Changed only through :meth:`watch`; a set of its own only once it has one (most
    connections never do: an empty set per connection is 216 bytes)."""
    channel_info: Mapping[str, Any] = _NO_INFO
    """Channel -> the ``info`` its channel token (protocol.md §4.4.2) or the join hook
    (docs/hooks.md) gave it there. Changed only through :meth:`set_info` (shared while
    empty, as :attr:`watching`)."""

    def watch(self, channel: str, sees: bool) -> None:
        """Whether this connection sees ``channel``'s presence (see :attr:`watching`)."""
        if sees and channel not in self.watching:
            self.watching = {*self.watching, channel}
        elif not sees and channel in self.watching:
            self.watching = self.watching - {channel} or frozenset()

    def set_info(self, channel: str, info: Any) -> None:
        """This connection's ``info`` in ``channel`` (None: none)."""
        if info is not None:
            self.channel_info = {**self.channel_info, channel: info}
        elif channel in self.channel_info:
            rest = {k: v for k, v in self.channel_info.items() if k != channel}
            self.channel_info = rest or _NO_INFO

    @property
    def session_key(self) -> tuple[str, str] | None:
        """``(user, session)``: what sign-outs and revocations are keyed by."""
        if self.user is None or self.session is None:
            return None
        return (self.user, self.session)

    def info(self, channel: str | None = None) -> dict[str, Any]:
        """The member as clients see it: ``{"id", "user", "data"}``, and in ``channel``
        its ``info`` when it has one there (from its channel token or the join hook)."""
        found = {"id": self.id, "user": self.user, "data": self.profile}
        if channel is not None and channel in self.channel_info:
            found["info"] = self.channel_info[channel]
        return found


PresencePolicy = Callable[[str], str]
"""Channel name -> who receives its presence: ``anyone``, ``signed_in`` or ``nobody``."""


def _everyone_sees_presence(channel: str) -> str:
    return "anyone"


class ChannelTable:
    """Channels, members and fan-out for one app.

    Args:
        pending: where fan-out records what awaits a flush.
        presence_policy: who receives each channel's presence events (the app's channel
            rules); consulted when presence is published, so a reload applies at once.
    """

    def __init__(
        self, pending: Pending, presence_policy: PresencePolicy = _everyone_sees_presence
    ) -> None:
        self._pending = pending
        self.presence_policy = presence_policy
        self._channels: dict[str, dict[str, Member]] = {}
        self._order: dict[str, SortedKeyList] = {}
        self._signed_in: dict[str, dict[str, Member]] = {}
        self._watching: dict[str, dict[str, Member]] = {}
        self._diff_members: dict[str, int] = {}
        self._split: dict[str, _Split] = {}
        self._everyone: dict[str, Member] = {}
        self._user_conns: dict[tuple[str, str], int] = {}
        self._users: dict[str, dict[str, Member]] = {}
        self._sessions: dict[tuple[str, str], dict[str, Member]] = {}
        self._seq = itertools.count(1)

    # -- connections ----------------------------------------------------------------------

    def connect(self, member: Member) -> None:
        self._everyone[member.id] = member
        if member.user is not None:
            self._users.setdefault(member.user, {})[member.id] = member
        key = member.session_key
        if key is not None:
            self._sessions.setdefault(key, {})[member.id] = member

    def disconnect(self, member: Member) -> list[tuple[str, bool]]:
        """Remove the member everywhere; returns ``(channel, last)`` for each channel left."""
        left = [(ch, self.leave(member, ch)) for ch in list(member.channels)]
        self._everyone.pop(member.id, None)
        _unindex(self._users, member.user, member)
        _unindex(self._sessions, member.session_key, member)
        return [(ch, last) for ch, last in left if last is not None]

    def user(self, user: str) -> Mapping[str, Member]:
        """The connections signed in as ``user``."""
        return self._users.get(user, _EMPTY)

    def set_session(self, member: Member, session: str | None) -> None:
        """The member's session id changed (a refreshed token of the same user)."""
        if session != member.session:
            _unindex(self._sessions, member.session_key, member)
            member.session = session
            key = member.session_key
            if key is not None and member.id in self._everyone:
                self._sessions.setdefault(key, {})[member.id] = member

    def session(self, user: str, session: str) -> Mapping[str, Member]:
        """The connections signed in as ``user`` whose token names ``session``.

        Keyed by both: session ids are chosen by the app's backend and need only be unique
        per user, so one user's sign-out never reaches another user's session of that id.
        """
        return self._sessions.get((user, session), _EMPTY)

    @property
    def everyone(self) -> Mapping[str, Member]:
        return self._everyone

    def __len__(self) -> int:
        return len(self._everyone)

    # -- channels -------------------------------------------------------------------------

    def join(self, member: Member, channel: str) -> bool | None:
        """Add ``member`` to ``channel``; returns "first of its user", or None if already in."""
        if channel in member.channels:
            return None
        group = self._channels.get(channel)
        if group is None:
            group = self._channels[channel] = {}
            self._order[channel] = SortedKeyList(key=_join_seq(channel))
        group[member.id] = member
        member.channels[channel] = next(self._seq)
        self._order[channel].add(member)
        if member.diffs:
            self._diff_members[channel] = self._diff_members.get(channel, 0) + 1
        split = self._split.get(channel)
        if split is not None and admits(split.policy, member, channel):
            split.sides[member.diffs][member.id] = member
        watching = self._watching.get(channel)
        if watching is not None and channel in member.watching:
            watching[member.id] = member
        if member.user is None:
            return True
        signed_in = self._signed_in.get(channel)
        if signed_in is not None:
            signed_in[member.id] = member
        key = (channel, member.user)
        count = self._user_conns.get(key, 0)
        self._user_conns[key] = count + 1
        return count == 0

    def leave(self, member: Member, channel: str) -> bool | None:
        """Remove ``member`` from ``channel``; returns "last of its user", or None if not in."""
        seq = member.channels.pop(channel, None)
        if seq is None:
            return None
        group = self._channels[channel]
        del group[member.id]
        order = self._order[channel]
        del order[order.bisect_key_left(seq)]  # sequence numbers are unique: exactly it
        for kept in (self._signed_in.get(channel), self._watching.get(channel)):
            if kept is not None:
                kept.pop(member.id, None)
        if member.diffs:
            count = self._diff_members[channel] - 1
            if count:
                self._diff_members[channel] = count
            else:
                del self._diff_members[channel]
        split = self._split.get(channel)
        if split is not None:
            split.sides[member.diffs].pop(member.id, None)
        if member.outbox.items:
            # It may hold messages queued through this group: the flusher must still visit it.
            self._pending.outboxes.add(member.outbox)
        if not group:
            del self._channels[channel]
            del self._order[channel]
            self._signed_in.pop(channel, None)
            self._watching.pop(channel, None)
            self._split.pop(channel, None)
        if member.user is None:
            return True
        key = (channel, member.user)
        count = self._user_conns[key] - 1
        if count:
            self._user_conns[key] = count
        else:
            del self._user_conns[key]
        return count == 0

    def user_connections(self, channel: str, user: str | None) -> int:
        """How many connections ``user`` has in ``channel``. An anonymous connection is its
        own user: always 1 (its join is a first, its leave a last)."""
        if user is None:
            return 1
        return self._user_conns.get((channel, user), 0)

    def members(self, channel: str) -> Mapping[str, Member]:
        """The channel's members in join order (empty if the channel does not exist)."""
        return self._channels.get(channel, _EMPTY)

    def page(self, channel: str, after: int | None, limit: int) -> tuple[list[Member], int | None]:
        """Up to ``limit`` members who joined after cursor ``after``, in join order; and the
        next cursor (the last listed member's join sequence number) or None on the last page.

        O(log n + limit) at any depth. A cursor stays valid when members leave, the one it
        names included: the next page starts with whoever joined after it.
        """
        order = self._order.get(channel)
        if order is None:
            return [], None
        start = 0 if after is None else order.bisect_key_right(after)
        page: list[Member] = order[start : start + limit + 1]
        if len(page) > limit:
            page.pop()
            return page, page[-1].channels[channel]
        return page, None

    def presence_group(self, channel: str) -> Mapping[str, Member]:
        """The members of ``channel`` who receive its presence events, per its policy."""
        policy = self.presence_policy(channel)
        if policy == "anyone":
            self._signed_in.pop(channel, None)  # the policy changed (a reload): not needed
            return self.members(channel)
        if policy == "signed_in":
            return self._signed_in_group(channel)
        self._signed_in.pop(channel, None)
        if policy in _PER_CONNECTION:
            return self._watching_group(channel)
        return _EMPTY

    def presence_receivers(self, channel: str, diffs: bool) -> Mapping[str, Member]:
        """The members of ``channel`` who receive its presence events, per its policy, and
        take them as batched diffs (``diffs``) or as one ``member_*`` frame per event."""
        group = self.presence_group(channel)
        counted = self._diff_members.get(channel, 0)
        if counted == 0:
            return _EMPTY if diffs else group
        if counted == len(self._channels[channel]):
            return group if diffs else _EMPTY
        policy = self.presence_policy(channel)
        split = self._split.get(channel)
        if split is None or split.policy != policy:
            # Built once per mixed channel (or per policy change), then kept by join and leave.
            split = _Split(policy)
            for m in group.values():
                split.sides[m.diffs][m.id] = m
            self._split[channel] = split
        return split.sides[diffs]

    def takes_diffs(self, channel: str) -> bool:
        """Whether any member of ``channel`` takes presence as diffs."""
        return channel in self._diff_members

    def _signed_in_group(self, channel: str) -> Mapping[str, Member]:
        group = self._signed_in.get(channel)
        if group is None:
            members = self._channels.get(channel)
            if members is None:
                return _EMPTY
            # Built once per channel (or per policy change), then kept by join and leave.
            group = {k: m for k, m in members.items() if m.user is not None}
            self._signed_in[channel] = group
        return group

    def _watching_group(self, channel: str) -> Mapping[str, Member]:
        group = self._watching.get(channel)
        if group is None:
            members = self._channels.get(channel)
            if members is None:
                return _EMPTY
            # Built once per channel (or per change of a member's right), then kept by
            # join and leave.
            group = {k: m for k, m in members.items() if channel in m.watching}
            self._watching[channel] = group
        return group

    def rewatch(self, member: Member, channel: str, sees: bool) -> None:
        """``member``'s right to see ``channel``'s presence (per-connection values) is now
        ``sees`` (a refreshed token): the groups built from it are rebuilt on next use."""
        if sees == (channel in member.watching):
            return
        member.watch(channel, sees)
        self._watching.pop(channel, None)
        self._split.pop(channel, None)

    def channels(self) -> Mapping[str, Mapping[str, Member]]:
        return self._channels

    # -- fan-out --------------------------------------------------------------------------

    def deliver(self, group: Mapping[str, Member], data: bytes, skip: Member | None = None) -> int:
        """Queue ``data`` on every member of ``group`` except ``skip``; returns the count.

        This is the broadcast hot path: one append per member, no per-member branch. The
        skipped member (the sender, when echo is off) gets the append too and has it popped:
        it is the last item of its own outbox since nothing else ran in between.
        """
        for m in group.values():
            m.outbox.items.append(data)
        count = len(group)
        if skip is not None and skip.id in group:
            skip.outbox.items.pop()
            count -= 1
        if count:
            self._pending.mark_group(group)
        return count


_EMPTY: Mapping[str, Member] = {}


@attrs.define(slots=True)
class _Split:
    """A mixed channel's presence group divided by how members take presence."""

    policy: str
    """The presence policy it was built under."""
    sides: tuple[dict[str, Member], dict[str, Member]] = attrs.field(factory=lambda: ({}, {}))
    """``sides[False]``: ``member_*`` takers; ``sides[True]``: diff takers."""


def _join_seq(channel: str) -> Callable[[Member], int]:
    """The sort key of a channel's ``_order``: a member's join sequence number in it."""

    def key(member: Member) -> int:
        return member.channels[channel]

    return key


_PER_CONNECTION = frozenset({"granted", "token", "hook"})
"""Presence values decided per connection (``Member.watching``); ``hook``: the members the
join hook let in (docs/hooks.md)."""


def per_connection(policy: str) -> bool:
    """Whether a presence policy is decided per connection (read from ``Member.watching``)."""
    return policy in _PER_CONNECTION


def admits(policy: str, member: Member, channel: str) -> bool:
    """Whether a presence policy lets ``member`` receive ``channel``'s presence."""
    if policy == "anyone":
        return True
    if policy == "signed_in":
        return member.user is not None
    return policy in _PER_CONNECTION and channel in member.watching


def _unindex(index: dict[Any, dict[str, Member]], key: Any, member: Member) -> None:
    if key is None:
        return
    members = index.get(key)
    if members is not None:
        members.pop(member.id, None)
        if not members:
            del index[key]
