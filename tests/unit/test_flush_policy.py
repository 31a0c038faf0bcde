"""The flusher's batching window follows the cost of its passes
(rtcore.core.limits.flush_policy)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.core.limits.flush_policy import flush_delay

MAX = 0.002


@pytest.mark.parametrize(
    ("now", "last_end", "duration", "expected"),
    [
        (100.0, 0.0, 0.001, 0.0),  # idle: the previous pass long ago -> at once
        (10.0, 10.0, 0.000_02, 0.000_005),  # a 20 µs pass: wait 5 µs, not the whole window
        (10.0, 10.0, 0.000_8, 0.000_2),  # a 0.8 ms pass: a quarter of it (80% flushing)
        (10.0, 10.0, 0.01, MAX),  # a 10 ms pass (heavy load): the full window, no more
        (10.001, 10.0, 0.01, MAX - 0.001),  # part of the window already passed
        (10.0, 10.0, 0.0, 0.0),  # a pass that cost nothing
    ],
)
def test_the_wait_follows_the_previous_pass(
    now: float, last_end: float, duration: float, expected: float
) -> None:
    assert flush_delay(now, last_end, duration, MAX) == pytest.approx(expected)


def test_a_smaller_duty_waits_longer() -> None:
    assert flush_delay(10.0, 10.0, 0.000_1, MAX, duty=0.5) == pytest.approx(0.000_1)
    assert flush_delay(10.0, 10.0, 0.000_1, MAX, duty=0.2) == pytest.approx(0.000_4)


@given(
    now=st.floats(0, 1e6),
    since=st.floats(0, 10),
    duration=st.floats(0, 10),
    max_window=st.floats(0, 1),
)
def test_never_negative_never_beyond_the_window(
    now: float, since: float, duration: float, max_window: float
) -> None:
    wait = flush_delay(now, now - since, duration, max_window)
    assert 0.0 <= wait <= max_window + 1e-9
    assert (wait <= duration + 1e-9) or duration > max_window
