"""Token-bucket chains on a fake clock: the admission bound, all-or-nothing charging, order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.core.limits.limiter import OPERATIONS, Chain, Rule

rules = st.builds(
    Rule,
    name=st.sampled_from(["a", "b", "c"]),
    rate=st.integers(1, 20),
    per_seconds=st.sampled_from([0.5, 1.0, 10.0]),
    burst=st.none() | st.integers(1, 30),
    scope=st.sampled_from(["client", "connection"]),
)


@given(
    chain_rules=st.lists(rules, min_size=1, max_size=3, unique_by=lambda r: r.name),
    gaps=st.lists(st.floats(0, 0.3), min_size=1, max_size=200),
    keys=st.lists(st.sampled_from(["u1", "u2"]), min_size=200, max_size=200),
)
def test_no_rule_ever_admits_more_than_burst_plus_rate_times_elapsed(
    chain_rules: list[Rule], gaps: list[float], keys: list[str]
) -> None:
    chain = Chain(chain_rules)
    now = 0.0
    admitted: list[tuple[float, str]] = []
    for gap, key in zip(gaps, keys, strict=False):  # keys may outnumber gaps
        now += gap
        if chain.check("send", key, key + "-conn", now) is None:
            admitted.append((now, key))
        if gap > 0.25:
            chain.sweep(now)  # sweeping must not change what is admitted
    for rule in chain_rules:
        for key in ("u1", "u2"):
            times = [t for t, k in admitted if k == key]
            for i, start in enumerate(times):
                for j in range(i, len(times)):
                    elapsed = times[j] - start
                    assert j - i + 1 <= rule.capacity + rule.refill_per_second * elapsed + 1e-9


def test_a_refused_operation_charges_no_bucket() -> None:
    chain = Chain([Rule("wide", 100, 1), Rule("narrow", 1, 1)])
    assert chain.check("send", "k", "c", 0.0) is None
    for _ in range(50):  # narrow refuses: wide must not lose tokens meanwhile
        refusal = chain.check("send", "k", "c", 0.0)
        assert refusal is not None and refusal.rule == "narrow"
    chain2 = Chain([Rule("wide", 100, 1)])
    for _ in range(99):
        assert chain2.check("send", "k", "c", 0.0) is None
    # wide had 100 tokens and one was used: 99 more are admitted at t=1 after narrow refills
    admitted = 0
    for _ in range(200):
        if chain.check("send", "k", "c", 1.0) is None:
            admitted += 1
    assert admitted == 1  # narrow: one per second; wide still has plenty
    # The same with a wide rule that refills too slowly to hide a charge: 10 per 1000 s.
    chain = Chain([Rule("wide", 10, 1000), Rule("narrow", 1, 1)])
    assert chain.check("send", "k", "c", 0.0) is None  # wide: 9 left
    for _ in range(50):  # narrow refuses; were wide charged, it would be empty after 9
        refusal = chain.check("send", "k", "c", 0.0)
        assert refusal is not None and refusal.rule == "narrow"
    admitted = [t for t in range(1, 12) if chain.check("send", "k", "c", float(t)) is None]
    assert admitted == list(range(1, 10))  # wide's 9 tokens, one a second (narrow)
    refusal = chain.check("send", "k", "c", 12.0)
    assert refusal is not None and refusal.rule == "wide"


def test_connection_buckets_are_dropped_when_the_connection_ends() -> None:
    chain = Chain([Rule("per-client", 5, 1), Rule("per-conn", 5, 1, scope="connection")])
    for i in range(100):
        assert chain.check("send", "user-1", f"conn-{i}", 0.0) is None or i >= 5
    assert len(chain) == 1 + 100  # the client's bucket and one per connection
    for i in range(100):
        chain.forget_connection(f"conn-{i}")
    assert len(chain) == 1  # the client's bucket lives on (other connections share it)


def test_the_first_refusing_rule_is_named_and_retry_after_covers_the_whole_chain() -> None:
    chain = Chain(
        [
            Rule("per-second", 2, 1, error_message="slow down"),
            Rule("per-minute", 3, 60, error_message="enough for this minute"),
        ]
    )
    for _ in range(2):
        assert chain.check("send", "k", "c", 0.0) is None
    refusal = chain.check("send", "k", "c", 0.0)
    assert refusal is not None
    assert (refusal.rule, refusal.message) == ("per-second", "slow down")
    assert refusal.retry_after == pytest.approx(0.5)  # per-second refills 2/s; per-minute has 1
    assert chain.check("send", "k", "c", 1.0) is None  # the third of the minute
    refusal = chain.check("send", "k", "c", 2.0)
    assert refusal is not None and refusal.rule == "per-minute"
    # per-minute holds 0.05 + 0.05 tokens and refills 0.05/s: 18 s to reach one token
    assert refusal.retry_after == pytest.approx(18.0)


def test_scopes_and_operations() -> None:
    chain = Chain(
        [
            Rule("per-conn", 1, 1, scope="connection"),
            Rule("joins", 1, 10, operations=frozenset({"join"})),
        ]
    )
    assert chain.check("send", "user", "c1", 0.0) is None
    assert chain.check("send", "user", "c1", 0.0) is not None  # c1's bucket is empty
    assert chain.check("send", "user", "c2", 0.0) is None  # c2 has its own
    assert chain.check("join", "user", "c3", 0.0) is None
    refusal = chain.check("join", "user", "c4", 0.0)  # joins is per client: shared
    assert refusal is not None and refusal.rule == "joins"
    assert "leave" not in OPERATIONS


def test_sweep_drops_only_full_buckets_and_reload_keeps_unchanged_rules() -> None:
    rule = Rule("r", 1, 1, burst=2)
    chain = Chain([rule])
    chain.check("send", "a", "ca", 0.0)
    chain.check("send", "b", "cb", 0.0)
    assert len(chain) == 2
    assert chain.sweep(0.5) == 0  # 1.5 of 2 tokens
    assert chain.sweep(1.0) == 2
    chain.check("send", "a", "ca", 2.0)
    chain.replace_rules([rule, Rule("new", 5, 1)])
    assert len(chain) == 1  # r unchanged: its bucket stays
    chain.replace_rules([Rule("r", 2, 1)])
    assert len(chain) == 0  # r changed: fresh buckets
