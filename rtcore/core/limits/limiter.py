"""Token-bucket rate limiters, chained (sans-IO: ``now`` is passed in).

Theory of operation: a :class:`Rule` describes one bucket per key: capacity ``burst`` tokens,
refilled continuously at ``rate / per_seconds`` tokens a second (a
:class:`~rtcore.core.limits.bucket.TokenBucket`; ``bucket.take_all`` charges a chain's). A
:class:`Chain` holds an app's ordered rules and the buckets of every key. An operation is
admitted only if **every** bucket it is subject to holds a token; then (and only then) one
token is taken from each -- a refused operation charges nobody. The refusal names the first
refusing rule in order, and says when the whole chain would admit again.

Buckets are created on first use and are indistinguishable from absent once full again, so
:meth:`Chain.sweep` drops full ones: memory is bounded by the keys active within a refill
period. A connection's own buckets (``scope = "connection"``) are dropped when it ends
(:meth:`Chain.forget_connection`): nobody can use them again. Every rule has its own buckets,
so two limiters never share a counter. ``now`` is monotonic seconds, passed in.

Invariant (property-tested): over any interval of length T, a key is admitted at most
``burst + rate * T / per_seconds`` operations by each of its rules.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from rtcore.core.limits.bucket import TokenBucket, take_all

OPERATIONS = frozenset({"join", "members", "profile", "send", "broadcast", "refresh", "history"})
"""The operations rate limiters apply to (leave never is: a client may always shed load)."""
SCOPES = ("client", "connection")
"""Whose bucket a rule charges (:attr:`Rule.scope`)."""


@attrs.frozen
class Rule:
    """One limiter of a chain (the ``[[apps.rate_limits]]`` config table)."""

    name: str
    rate: float
    """Tokens added per ``per_seconds``."""
    per_seconds: float
    burst: float | None = None
    """Bucket capacity; defaults to ``rate``."""
    error_message: str = "rate limit exceeded"
    scope: str = "client"
    """``client``: one bucket per signed-in user, else per remote IP (more connections do not
    buy more capacity); ``connection``: one bucket per connection."""
    operations: frozenset[str] = OPERATIONS

    @property
    def capacity(self) -> float:
        return self.rate if self.burst is None else self.burst

    @property
    def refill_per_second(self) -> float:
        return self.rate / self.per_seconds


LIMITER_KEYS = tuple(field.name for field in attrs.fields(Rule))
"""The keys of a ``[[apps.rate_limits]]`` table: :class:`Rule`'s fields, in order (the config
reader and the settings page take them from here)."""


@attrs.frozen
class Refusal:
    """Why an operation was refused, and when it would be admitted."""

    rule: str
    message: str
    retry_after: float
    """Seconds until every bucket of the chain would admit the operation."""


class Chain:
    """An app's ordered limiters and their buckets."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __len__(self) -> int:
        """Buckets held (for tests and stats)."""
        return len(self._buckets)

    def client_rules(self, operation: str) -> list[Rule]:
        """The rules of scope ``client`` that ``operation`` is subject to, in order: with a
        shared broker their buckets are the cluster's (:meth:`RedisBroker.take`)."""
        return [r for r in self.rules if r.scope == "client" and operation in r.operations]

    def check(
        self,
        operation: str,
        client_key: str,
        conn_key: str,
        now: float,
        *,
        scope: str | None = None,
        take: bool = True,
    ) -> Refusal | None:
        """Admit (taking a token from each bucket) or refuse (taking none). ``scope``: only
        the rules of that scope; ``take=False``: only say whether it would be admitted."""
        rules: list[Rule] = []
        buckets: list[TokenBucket] = []
        for rule in self.rules:
            if operation not in rule.operations or (scope is not None and rule.scope != scope):
                continue
            key = (rule.name, client_key if rule.scope == "client" else conn_key)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(rule.capacity, rule.refill_per_second, now)
                self._buckets[key] = bucket
            rules.append(rule)
            buckets.append(bucket)
        refused, wait = take_all(buckets, now, take=take)
        if not refused:
            return None
        rule = rules[refused - 1]
        return Refusal(rule.name, rule.error_message, wait)

    def sweep(self, now: float) -> int:
        """Drop buckets that have refilled completely; returns how many were dropped."""
        full = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        for key in full:
            del self._buckets[key]
        return len(full)

    def forget_connection(self, conn_key: str) -> None:
        """The connection ``conn_key`` ended: drop its connection-scoped buckets."""
        for rule in self.rules:
            if rule.scope == "connection":
                self._buckets.pop((rule.name, conn_key), None)

    def replace_rules(self, rules: Iterable[Rule]) -> None:
        """New rules (a config reload): buckets of rules that changed or went away are dropped."""
        new = tuple(rules)
        kept = {r.name for r in new} & {r.name for r in self.rules if r in new}
        self._buckets = {k: b for k, b in self._buckets.items() if k[0] in kept}
        self.rules = new
