"""The channels an app's backend put users into (sans-IO, bounded): remembered so that a
user's later connections are put back at hello (rtcore.core.membership, protocol.md §5.7)."""

from __future__ import annotations

from collections import OrderedDict

MAX_REMEMBERED = 100_000
"""User-wide server-side memberships an app remembers (per node); beyond it the oldest is
forgotten first (its connections stay in the channel; a later connection is not put back)."""


class ServerChannels:
    """Which users the backend put into which channels (bounded, oldest forgotten first)."""

    __slots__ = ("_pairs", "_by_user", "limit")

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._by_user: dict[str, dict[str, None]] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self._pairs)

    def remember(self, user: str, channel: str) -> None:
        key = (user, channel)
        self._pairs[key] = None
        self._pairs.move_to_end(key)
        self._by_user.setdefault(user, {})[channel] = None
        while len(self._pairs) > self.limit:
            (old_user, old_channel), _ = self._pairs.popitem(last=False)
            self._drop(old_user, old_channel)

    def forget(self, user: str, channel: str) -> None:
        if self._pairs.pop((user, channel), 0) is None:
            self._drop(user, channel)

    def _drop(self, user: str, channel: str) -> None:
        channels = self._by_user.get(user)
        if channels is not None:
            channels.pop(channel, None)
            if not channels:
                del self._by_user[user]

    def of(self, user: str) -> list[str]:
        """The channels ``user`` was put into, in the order they were."""
        return list(self._by_user.get(user, ()))
