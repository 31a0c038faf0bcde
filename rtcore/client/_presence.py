"""The client's member lists: presence frames and listings applied per channel (sans-IO).

Theory of operation: a joined channel's list starts empty at the join's ``ok``; every
presence frame for it -- a ``member_*`` frame, or a ``presence`` diff taken apart into
per-member events (protocol.md §5.2.1: leaves, then joins, then updates) -- is applied in
arrival order, and each page of a listing is merged in as its reply arrives. Applying is
idempotent (a join or an update sets the member, a leave removes it), so a page and a frame
that both reflect the same change agree, whatever order they arrive in; once a listing has
completed after the join, the list equals the server's (the convergence test checks this).

A connection without presence diffs gets no ``member_*`` frames of a channel past its
``member_events_max`` (protocol.md §5.2.2): at ``presence_paused`` the list is emptied (it
would go stale) until ``presence_resumed``, when it starts afresh and is listed again.
"""

from __future__ import annotations

from typing import Any

from rtcore.protocol import RemoteProtocolError
from rtcore.protocol import frames as f

Member = dict[str, Any]
"""``{"id", "user", "data"}``, as the server lists members."""


class MemberLists:
    """Joined channel -> member id -> member."""

    __slots__ = ("_lists", "_paused")

    def __init__(self) -> None:
        self._lists: dict[str, dict[str, Member]] = {}
        self._paused: set[str] = set()

    def members(self, channel: str) -> list[Member]:
        return list(self._lists.get(channel, {}).values())

    def track(self, channel: str) -> None:
        """The channel was joined: keep its list from now on (kept if already kept)."""
        self._lists.setdefault(channel, {})

    def forget(self, channel: str | None = None) -> None:
        """Stop keeping one channel's list (left), or every list (a new connection)."""
        if channel is None:
            self._lists.clear()
            self._paused.clear()
        else:
            self._lists.pop(channel, None)
            self._paused.discard(channel)

    def paused(self, channel: str) -> bool:
        """Whether the server paused the channel's per-member events (§5.2.2)."""
        return channel in self._paused

    def pause(self, channel: str) -> None:
        """``presence_paused``: the list would go stale; it is emptied until resumed."""
        kept = self._lists.get(channel)
        if kept is not None:
            kept.clear()
            self._paused.add(channel)

    def resume(self, channel: str) -> bool:
        """``presence_resumed``: the list starts afresh; returns whether it is kept (then
        the channel must be listed again)."""
        self._paused.discard(channel)
        kept = self._lists.get(channel)
        if kept is None:
            return False
        kept.clear()
        return True

    def told(self, frame: f.PresencePaused | f.PresenceResumed) -> bool:
        """The channel's events paused or resumed; returns whether to list it again."""
        if isinstance(frame, f.PresencePaused):
            self.pause(frame.channel)
            return False
        return self.resume(frame.channel)

    def merge_page(self, channel: str, data: object) -> None:
        """A page of a ``members`` listing arrived (its ``ok`` data)."""
        kept = self._lists.get(channel)
        if kept is not None and channel not in self._paused and isinstance(data, dict):
            for member in data.get("members") or ():
                kept[member["id"]] = member

    def apply(self, event: f.MemberEvent) -> None:
        """One member joined, left or was updated."""
        kept = self._lists.get(event.channel)
        member_id = event.member.get("id")
        if kept is None or type(member_id) is not str:
            return
        if event.kind == "member_leave":
            kept.pop(member_id, None)
        else:
            kept[member_id] = event.member


def member_events(frame: f.PresenceDiff) -> list[f.MemberEvent]:
    """A presence diff as per-member events, in the order protocol.md §5.2.1 applies them.

    Raises:
        RemoteProtocolError: an entry has no string ``id`` (the server broke the protocol).
    """
    events = []
    for kind, entries, flag in (
        ("member_leave", frame.leaves, "last"),
        ("member_join", frame.joins, "first"),
        ("member_update", frame.updates, None),
    ):
        for entry in entries or ():
            if type(entry.get("id")) is not str:
                raise RemoteProtocolError(f"presence: a {kind[7:]} entry without a string id")
            member = {"id": entry["id"], "user": entry.get("user"), "data": entry.get("data")}
            value = entry.get(flag) if flag else None
            events.append(
                f.MemberEvent(
                    kind,
                    frame.channel,
                    member,
                    first=value if flag == "first" else None,
                    last=value if flag == "last" else None,
                )
            )
    return events
