"""rtcore loadtest's pure parts: latency histograms that add up across processes and
machines, the deliveries each scenario owes, the plan's connections, and the target rule."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.loadtest import plan, stats, targets
from rtcore.loadtest.agent import backoff

latencies = st.lists(st.floats(min_value=2e-6, max_value=30.0), min_size=1, max_size=300)


@given(latencies, st.sampled_from([50.0, 90.0, 99.0, 100.0]))
def test_a_percentile_from_the_histogram_is_within_two_percent(xs: list[float], p: float) -> None:
    hist: dict[int, int] = {}
    for x in xs:
        key = stats.bucket(x)
        hist[key] = hist.get(key, 0) + 1
    exact = sorted(xs)[max(0, math.ceil(p / 100 * len(xs)) - 1)]
    got = stats.percentile(hist, p)
    assert got is not None and exact <= got <= exact * stats.GROWTH * (1 + 1e-9)


@given(latencies, latencies)
def test_histograms_of_two_machines_add_up_to_the_histogram_of_both(
    a: list[float], b: list[float]
) -> None:
    def hist(xs: list[float]) -> dict[str, int]:
        out: dict[int, int] = {}
        for x in xs:
            out[stats.bucket(x)] = out.get(stats.bucket(x), 0) + 1
        return {str(k): v for k, v in out.items()}  # as JSON has them

    merged = stats.merge_hist(stats.merge_hist({}, hist(a)), hist(b))
    assert merged == stats.merge_hist({}, hist(a + b))


def test_series_merge_by_second_and_add_every_count() -> None:
    one = [
        {
            "t": 0,
            "open": 3,
            "opened": 3,
            "deliveries": 5,
            "sent": 1,
            "refusals": {"close 4011": 1},
            "closes": {},
            "latency": {"10": 2},
        }
    ]
    two = [
        {
            "t": 0,
            "open": 2,
            "opened": 2,
            "deliveries": 1,
            "sent": 0,
            "refusals": {"close 4011": 2},
            "closes": {"close 4008": 1},
            "latency": {"10": 1},
        },
        {
            "t": 1,
            "open": 2,
            "opened": 0,
            "deliveries": 4,
            "sent": 0,
            "refusals": {},
            "closes": {},
            "latency": {},
        },
    ]
    merged = stats.merge_series([one, two])
    assert [row["t"] for row in merged] == [0, 1]
    assert merged[0]["open"] == 5 and merged[0]["deliveries"] == 6
    assert merged[0]["refusals"] == {"close 4011": 3} and merged[0]["closes"] == {"close 4008": 1}
    assert merged[0]["latency"] == {"10": 3}


def test_each_scenario_owes_what_its_audience_hears() -> None:
    acked = {"a": 3, "b": 2}
    ready = {"a": 4, "b": 5}
    assert plan.expected_deliveries("fanout", acked, ready) == 3 * 4 + 2 * 5
    assert plan.expected_deliveries("churn", acked, ready) == 3 * 4 + 2 * 5
    assert plan.expected_deliveries("chat", acked, ready) == 3 * 3 + 2 * 4  # not the sender
    assert plan.expected_deliveries("connect", acked, ready) == 0


def test_the_plans_connections() -> None:
    fanout = plan.build_conns("fanout", 6, targets=2, channels=3)
    publisher, *subs = fanout
    assert publisher.role == "publisher" and publisher.target == 0
    assert publisher.channels == ("lt.fanout.0", "lt.fanout.1", "lt.fanout.2")
    assert [s.target for s in subs] == [0, 1, 0, 1, 0, 1]
    assert [s.channels[0][-1] for s in subs] == ["0", "1", "2", "0", "1", "2"]
    chat = plan.build_conns("chat", 7, targets=1, room_size=3)
    assert [c.channels[0] for c in chat] == ["lt.room.0"] * 3 + ["lt.room.1"] * 3 + ["lt.room.2"]
    churn = plan.build_conns("churn", 3, targets=1, churners=2)
    assert [c.role for c in churn] == ["member"] * 3 + ["churner"] * 2
    p = plan.Plan(
        "connect", (plan.Target("127.0.0.1", 1),), plan.build_conns("connect", 5, 1), {}, workers=2
    )
    assert [c.index for c in p.share(0)] == [0, 2, 4] and [c.index for c in p.share(1)] == [1, 3]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("ws://127.0.0.1:8765/", "127.0.0.1"),
        ("ws://localhost:8765/x?y=1", None),
        ("ws://[::1]:8765", "::1"),
        ("ws://127.9.9.9", "127.9.9.9"),
    ],
)
def test_loopback_targets_are_accepted(url: str, address: str | None) -> None:
    target = targets.parse(url, own_target=False)
    assert address is None or target.host == address
    if "localhost" in url:
        assert target.path == "/x?y=1" and target.host_header == "localhost:8765"


def test_other_targets_need_the_owners_word() -> None:
    with pytest.raises(targets.TargetError, match="not a loopback address"):
        targets.parse("ws://192.0.2.10:8765/", own_target=False)
    assert targets.parse("ws://192.0.2.10:8765/", own_target=True).host == "192.0.2.10"
    for url, reason in (
        ("wss://127.0.0.1/", "wss:// is not supported"),
        ("http://127.0.0.1/", "expected ws://"),
    ):
        with pytest.raises(targets.TargetError, match=reason):
            targets.parse(url, own_target=True)


def test_backoff_is_the_python_clients() -> None:
    rng = random.Random(1)
    for attempt, bound in ((1, 0.5), (2, 1.0), (4, 4.0), (10, 30.0), (40, 30.0)):
        delays = [backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays) and max(delays) > bound * 0.8
