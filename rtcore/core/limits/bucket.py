"""The token bucket: rtcore's one definition of it (sans-IO: ``now`` is passed in).

Theory of operation: a bucket holds at most ``capacity`` tokens and earns ``rate`` tokens per
unit of time, continuously (``now`` and ``rate`` share the unit: seconds for the limiters
here, milliseconds in Redis). A new bucket is full. A charge of ``cost`` tokens is granted
iff the bucket holds at least ``cost`` -- exactly ``cost`` is enough -- and then takes them;
a refused charge takes nothing and says how long until the bucket would hold ``cost``:
``(cost - tokens) / rate``. A clock that goes back earns nothing (``stamp`` never
decreases).

:func:`take_all` charges several buckets at once, all or none: the limiter chains
(:class:`rtcore.core.limits.limiter.Chain`) and, over Redis, the shared buckets of a client
(``rtcore/engines/redis/lua/bucket.lua``, the same rule in Lua). The connection's inbound
budget (:class:`rtcore.core.limits.admission.InboundBudget`) charges its two buckets one by
one; it holds them as plain numbers (every connection has them), refilled by :func:`refilled`,
the rule :meth:`TokenBucket.refill` applies too. ``tests/cases/bucket_cases.json`` is run
against this module and against the Lua script on a real Redis, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence


def refilled(tokens: float, capacity: float, rate: float, elapsed: float) -> float:
    """What a bucket holding ``tokens`` holds ``elapsed`` (> 0) later: what it earned at
    ``rate``, up to ``capacity``."""
    tokens += elapsed * rate
    return tokens if tokens < capacity else capacity


class TokenBucket:
    """One bucket: ``tokens`` as of ``stamp``."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        """Tokens earned per unit of time."""
        self.tokens = capacity
        self.stamp = now
        """When ``tokens`` was last brought up to date."""

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill, up to ``capacity``."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = refilled(self.tokens, self.capacity, self.rate, elapsed)
            self.stamp = now

    def spend(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if the bucket holds them (True); else take nothing (False).
        Call :meth:`refill` first: this one reads no clock."""
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def wait(self, cost: float = 1.0) -> float:
        """How long until the bucket holds ``cost`` tokens (0.0: it does now)."""
        short = cost - self.tokens
        return short / self.rate if short > 0 else 0.0

    def full(self, now: float) -> bool:
        """Would it be full at ``now``? (then it is indistinguishable from a new one)"""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.capacity


def take_all(
    buckets: Sequence[TokenBucket], now: float, cost: float = 1.0, *, take: bool = True
) -> tuple[int, float]:
    """Charge every bucket ``cost`` tokens, or none of them.

    Returns:
        ``(0, 0.0)`` when every bucket held ``cost`` (then, with ``take``, each was
        charged); else ``(i, wait)``: ``i`` the 1-based index of the first bucket short of
        tokens, ``wait`` how long until every bucket would hold ``cost``. Each bucket is
        refilled to ``now`` either way.
    """
    refused, wait = 0, 0.0
    for i, bucket in enumerate(buckets, 1):
        bucket.refill(now)
        if bucket.tokens < cost:
            wait = max(wait, bucket.wait(cost))
            if not refused:
                refused = i
    if refused:
        return refused, wait
    if take:
        for bucket in buckets:
            bucket.tokens -= cost
    return 0, 0.0
