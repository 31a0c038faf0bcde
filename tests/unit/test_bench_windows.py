"""bench steady's pause measure: the worst sampled delivery of each window."""

from __future__ import annotations

import pytest

from bench.scenarios.steady import window_maxima


def test_each_window_reports_its_worst_sample_in_ms() -> None:
    latencies = [0.001, 0.020, 0.003, 0.002, 0.050]
    sampled_at = [100.5, 105.0, 112.0, 119.9, 131.0]
    assert window_maxima(latencies, sampled_at, 100.0, 10.0) == pytest.approx(
        [20.0, 3.0, 0.0, 50.0]  # the third window had no sample
    )


def test_without_sample_times_there_are_no_windows() -> None:
    assert window_maxima([0.001, 0.002], [], 100.0, 10.0) == []
