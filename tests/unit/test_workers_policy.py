"""The worker supervisor's decisions (rtcore.workers.policy), without processes or clocks."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.config import BrokerConfig, Config, Limits
from rtcore.workers.policy import (
    MAX_WORKERS,
    STOP_MARGIN,
    GiveUp,
    Restart,
    RestartPolicy,
    exit_description,
    parse_count,
    refusal,
    stop_bound,
)

REDIS = Config(broker=BrokerConfig(kind="redis"))


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("2", 2), (str(MAX_WORKERS), MAX_WORKERS)])
def test_a_worker_count_parses(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["0", "-2", "", "two", "1.5", str(MAX_WORKERS + 1)])
def test_a_bad_worker_count_is_refused(text: str) -> None:
    assert parse_count(text) is None


def test_one_worker_needs_nothing() -> None:
    assert refusal(Config(), 1) is None
    assert refusal(Config(port=0, api_port=0), 1) is None


def test_more_workers_need_the_redis_broker() -> None:
    reason = refusal(Config(), 2)
    assert reason is not None
    assert '--workers 2 needs [broker] kind = "redis"' in reason and "'memory'" in reason
    assert refusal(REDIS, 2) is None


@pytest.mark.parametrize(
    ("ports", "named"),
    [
        ({"port": 0}, "port 0"),
        ({"api_port": 0}, "api_port 0"),
        ({"port": 0, "api_port": 0}, "port and api_port 0"),
    ],
)
def test_more_workers_need_fixed_ports(ports: dict[str, int], named: str) -> None:
    reason = refusal(attrs.evolve(REDIS, **ports), 3)
    assert reason is not None and f"needs fixed ports: {named} (any free port)" in reason


def test_no_server_api_is_fine_for_workers() -> None:
    assert refusal(attrs.evolve(REDIS, api_port=None), 2) is None


def test_the_stop_bound_covers_a_graceful_shutdown() -> None:
    limits = Limits(shutdown_grace=7.0, close_timeout=3.0)
    assert stop_bound(limits) == 10.0 + STOP_MARGIN


@pytest.mark.parametrize(
    ("returncode", "said"),
    [
        (0, "exit status 0"),
        (1, "exit status 1"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_exit_description(returncode: int, said: str) -> None:
    assert exit_description(returncode) == said


def test_restart_delays_double_up_to_the_bound_then_it_gives_up() -> None:
    policy = RestartPolicy(max_restarts=6, window=60.0, first_delay=0.5, max_delay=4.0)
    delays = [policy.after_crash(float(t), served=True) for t in range(6)]
    assert delays == [Restart(d) for d in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)]
    decision = policy.after_crash(6.0, served=True)
    assert isinstance(decision, GiveUp)
    assert "6 restarts in the last 60 s" in decision.reason


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window=60.0, first_delay=0.5)
    assert policy.after_crash(0.0, served=True) == Restart(0.5)
    assert policy.after_crash(10.0, served=True) == Restart(1.0)
    assert isinstance(policy.after_crash(59.9, served=True), GiveUp)
    assert policy.after_crash(60.0, served=True) == Restart(1.0)  # the one at 0 has left
    assert policy.after_crash(130.0, served=True) == Restart(0.5)  # a quiet minute: afresh


def test_a_worker_that_never_served_is_not_restarted() -> None:
    decision = RestartPolicy().after_crash(0.0, served=False)
    assert isinstance(decision, GiveUp) and "before serving" in decision.reason


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=60))
def test_restarts_within_any_window_never_exceed_the_bound(gaps: list[float]) -> None:
    policy = RestartPolicy(max_restarts=4, window=60.0)
    now, restarts = 0.0, []
    for gap in gaps:
        now += gap
        decision = policy.after_crash(now, served=True)
        if isinstance(decision, Restart):
            assert 0 < decision.delay <= policy.max_delay
            restarts.append(now)
            assert sum(1 for t in restarts if now - t < policy.window) <= policy.max_restarts
        else:  # giving up only with max_restarts of them in the window
            assert sum(1 for t in restarts if now - t < policy.window) == policy.max_restarts
