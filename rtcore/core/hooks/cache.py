"""Join answers remembered per (user, channel) for ``join_cache_ttl`` seconds (sans-IO,
``now`` passed in), bounded: when full, the expired are dropped, then the oldest."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 10_000


class AnswerCache(Generic[T]):
    __slots__ = ("ttl", "_entries", "hits", "misses")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, T]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str], now: float) -> T | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: tuple[str, str], answer: T, now: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries.pop(key, None)
        self._entries[key] = (now + self.ttl, answer)

    def __len__(self) -> int:
        return len(self._entries)
