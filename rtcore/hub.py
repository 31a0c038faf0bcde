"""The channel table of one app: who is in which channel, with what profile (sans-IO).

Theory of operation:

* A :class:`Member` is one connection. It is in the app's ``everyone`` group from hello to
  disconnect, and in one group per channel it joined. Groups are dicts keyed by member id in
  join order, which is what fan-out iterates and what member listings page through.
* A channel exists while it has members; the last leave deletes it.
* ``_user_conns[(channel, user)]`` counts a signed-in user's connections in a channel, so join
  and leave events can say "first connection of this user" / "last connection of this user".
  Anonymous connections are their own user: always first and last.
* Fan-out appends one framed bytes object to every member's outbox and marks the group
  pending; it never copies per member and never waits.

Invariants (checked by the state-machine test): every member in a channel group lists that
channel in ``Member.channels`` and vice versa; no group is empty; user counts equal the number
of that user's members in the group.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from rtcore.outbox import Outbox, Pending


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
    """The session id of the signed-in user's token (for sign-out and revocation)."""
    channels: dict[str, int] = attrs.field(factory=dict)
    """Channel -> join sequence number (the paging cursor of member listings)."""

    def info(self) -> dict[str, Any]:
        """The member as clients see it: ``{"id", "user", "data"}``."""
        return {"id": self.id, "user": self.user, "data": self.profile}


class ChannelTable:
    """Channels, members and fan-out for one app."""

    def __init__(self, pending: Pending) -> None:
        self._pending = pending
        self._channels: dict[str, dict[str, Member]] = {}
        self._everyone: dict[str, Member] = {}
        self._user_conns: dict[tuple[str, str], int] = {}
        self._users: dict[str, dict[str, Member]] = {}
        self._sessions: dict[str, dict[str, Member]] = {}
        self._seq = itertools.count(1)

    # -- connections ----------------------------------------------------------------------

    def connect(self, member: Member) -> None:
        self._everyone[member.id] = member
        if member.user is not None:
            self._users.setdefault(member.user, {})[member.id] = member
        if member.session is not None:
            self._sessions.setdefault(member.session, {})[member.id] = member

    def disconnect(self, member: Member) -> list[tuple[str, bool]]:
        """Remove the member everywhere; returns ``(channel, last)`` for each channel left."""
        left = [(ch, self.leave(member, ch)) for ch in list(member.channels)]
        self._everyone.pop(member.id, None)
        _unindex(self._users, member.user, member)
        _unindex(self._sessions, member.session, member)
        return [(ch, last) for ch, last in left if last is not None]

    def user(self, user: str) -> Mapping[str, Member]:
        """The connections signed in as ``user``."""
        return self._users.get(user, _EMPTY)

    def set_session(self, member: Member, session: str | None) -> None:
        """The member's session id changed (a refreshed token)."""
        if session != member.session:
            _unindex(self._sessions, member.session, member)
            member.session = session
            if session is not None and member.id in self._everyone:
                self._sessions.setdefault(session, {})[member.id] = member

    def session(self, session: str) -> Mapping[str, Member]:
        """The connections whose token names ``session``."""
        return self._sessions.get(session, _EMPTY)

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
        group = self._channels.setdefault(channel, {})
        group[member.id] = member
        member.channels[channel] = next(self._seq)
        if member.user is None:
            return True
        key = (channel, member.user)
        count = self._user_conns.get(key, 0)
        self._user_conns[key] = count + 1
        return count == 0

    def leave(self, member: Member, channel: str) -> bool | None:
        """Remove ``member`` from ``channel``; returns "last of its user", or None if not in."""
        if member.channels.pop(channel, None) is None:
            return None
        group = self._channels[channel]
        del group[member.id]
        if member.outbox.items:
            # It may hold messages queued through this group: the flusher must still visit it.
            self._pending.outboxes.add(member.outbox)
        if not group:
            del self._channels[channel]
        if member.user is None:
            return True
        key = (channel, member.user)
        count = self._user_conns[key] - 1
        if count:
            self._user_conns[key] = count
        else:
            del self._user_conns[key]
        return count == 0

    def members(self, channel: str) -> Mapping[str, Member]:
        """The channel's members in join order (empty if the channel does not exist)."""
        return self._channels.get(channel, _EMPTY)

    def page(self, channel: str, after: int | None, limit: int) -> tuple[list[Member], int | None]:
        """Up to ``limit`` members joined after cursor ``after``; and the next cursor or None."""
        members: Iterator[Member] = iter(self.members(channel).values())
        if after is not None:
            members = itertools.dropwhile(lambda m: m.channels[channel] <= after, members)
        page = list(itertools.islice(members, limit + 1))
        if len(page) > limit:
            page.pop()
            return page, page[-1].channels[channel]
        return page, None

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


def _unindex(index: dict[str, dict[str, Member]], key: str | None, member: Member) -> None:
    if key is None:
        return
    members = index.get(key)
    if members is not None:
        members.pop(member.id, None)
        if not members:
            del index[key]
