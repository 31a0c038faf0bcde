"""The token bucket (rtcore.core.limits.bucket): the shared table of cases (run against the
Lua bucket too, tests/integration/test_redis_scripts.py) and its invariant."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.core.limits.bucket import TokenBucket, take_all
from tests.cases import BUCKET_CASES, ids


@pytest.mark.parametrize("case", BUCKET_CASES, ids=ids(BUCKET_CASES))
def test_the_shared_bucket_cases(case: dict[str, Any]) -> None:
    start = case["steps"][0][0]
    buckets = [TokenBucket(capacity, rate, start) for capacity, rate in case["buckets"]]
    got = []
    for now, _, _ in case["steps"]:
        refused, wait = take_all(buckets, now)
        got.append([now, refused, math.ceil(wait)])
    assert got == case["steps"]


def test_a_charge_of_several_tokens_is_granted_or_refused_whole() -> None:
    bucket = TokenBucket(1000.0, 100.0, 0.0)
    assert bucket.spend(1000.0) and bucket.tokens == 0.0
    bucket.refill(5.0)
    assert not bucket.spend(501.0) and bucket.tokens == 500.0  # a refusal takes nothing
    assert bucket.wait(501.0) == pytest.approx(0.01)
    assert bucket.spend(500.0) and bucket.wait(0.0) == 0.0


@given(
    capacity=st.integers(1, 20),
    rate=st.sampled_from([0.5, 1.0, 8.0]),
    gaps=st.lists(st.floats(-0.5, 2.0), min_size=1, max_size=100),
)
def test_never_more_than_capacity_plus_rate_times_elapsed(
    capacity: int, rate: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(float(capacity), rate, 0.0)
    now = latest = 0.0
    granted = 0
    for gap in gaps:  # a negative gap: the clock went back
        now += gap
        latest = max(latest, now)
        if take_all([bucket], now) == (0, 0.0):
            granted += 1
        assert 0.0 <= bucket.tokens <= capacity
    assert granted <= capacity + rate * latest + 1e-9
