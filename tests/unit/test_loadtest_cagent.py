"""rtcore loadtest's C agent (rtcore/loadtest/csrc/cagent.c), its parts that must match the
Python agent's exactly: latency buckets (so histograms of the two add up), the reconnection
backoff, the plan it is given, and its reports translated into the Python agent's."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from rtcore.loadtest import cagent, native, stats
from rtcore.loadtest import plan as p


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc): the Python agent is used")
    build = tmp_path_factory.mktemp("cagent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTCORE_LOADTEST_BUILD", str(build))
        assert native.build("cagent")
        return native.binary_path("cagent")


def c_hist(binary: Path, latencies: list[float]) -> dict[str, int]:
    """The C agent's histogram of ``latencies`` (its JSON, as its reports have it)."""
    text = "".join(f"{x!r}\n" for x in latencies)
    proc = subprocess.run(
        [str(binary), "hist"], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    hist: dict[str, int] = json.loads(proc.stdout)
    return hist


def py_hist(latencies: list[float]) -> dict[int, int]:
    out: dict[int, int] = {}
    for x in latencies:
        out[stats.bucket(x)] = out.get(stats.bucket(x), 0) + 1
    return out


def edge_latencies() -> list[float]:
    """Every bucket's bound up to ~1 hour and its neighbours (where a rounding difference
    would show), values below the floor and negative ones (clock skew), and random ones."""
    xs = [-1.0, 0.0, 1e-9, stats.FLOOR]
    for k in range(1, 1200):
        bound = stats.bucket_upper(k)
        xs += [bound, math.nextafter(bound, 0), math.nextafter(bound, math.inf)]
    rng = random.Random(7)
    xs += [10 ** rng.uniform(-6.5, 3.5) for _ in range(20_000)]
    return xs


def test_the_c_agent_buckets_every_latency_as_stats_does(binary: Path) -> None:
    xs = edge_latencies()
    assert stats.merge_hist({}, c_hist(binary, xs)) == py_hist(xs)


def test_a_c_agents_histogram_and_a_python_ones_merge_exactly(binary: Path) -> None:
    rng = random.Random(11)
    a = [10 ** rng.uniform(-5, 1) for _ in range(3000)]
    b = [10 ** rng.uniform(-5, 1) for _ in range(2000)]
    from_c = c_hist(binary, a)
    from_python = {str(k): v for k, v in py_hist(b).items()}  # as a result's JSON has them
    merged = stats.merge_hist(stats.merge_hist({}, from_c), from_python)
    assert merged == py_hist(a + b)
    assert stats.summary(merged) == stats.summary(py_hist(a + b))


def test_the_c_agents_backoff_is_the_python_clients(binary: Path) -> None:
    for attempt, bound in ((1, 0.5), (2, 1.0), (4, 4.0), (10, 30.0), (40, 30.0)):
        proc = subprocess.run(
            [str(binary), "backoff", str(attempt), "400"], capture_output=True, text=True
        )
        delays = [float(x) for x in proc.stdout.split()]
        assert len(delays) == 400
        assert all(0 <= d <= bound for d in delays) and max(delays) > bound * 0.8
        assert min(delays) < bound * 0.2  # uniform from 0, not from bound / 2


def fanout_plan(workers: int = 2) -> p.Plan:
    return p.Plan(
        "fanout",
        (p.Target("127.0.0.1", 9001, "/rt", "example:9001"), p.Target("::1", 9002)),
        p.build_conns("fanout", 4, targets=2, channels=2),
        {"app": "a"},
        tokens=("tok-0", "tok-1", "tok-2"),
        connect_rate=100.0,
        rate=5.0,
        messages=7,
        size=3,
        duration=9.0,
        workers=workers,
    )


def test_the_plan_text_holds_the_shares_connections_and_every_hello() -> None:
    text = cagent.plan_text(fanout_plan(), worker=0, t0=1700000000.25)
    lines = text.splitlines()
    assert lines[0] == "plan fanout 1700000000.25 9.0 50.0 5.0 7 3 0"  # the ramp per process
    assert lines[1].startswith("target 127.0.0.1 9001 ")
    assert bytes.fromhex(lines[1].split()[3]).startswith(b"GET /rt HTTP/1.1\r\nHost: example:9001")
    assert lines[2].startswith("target ::1 9002 ")
    assert sum(line.startswith("hello ") for line in lines) == 3  # one per token
    assert [line for line in lines if line.startswith("channel")] == [
        "channel lt.fanout.0",
        "channel lt.fanout.1",
    ]
    # worker 0 of 2: connections 0, 2 and the publisher (index 4) with both channels
    conns = [line for line in lines if line.startswith("conn")]
    assert conns == ["conn 4 0 p 0,1", "conn 0 0 m 0", "conn 2 0 m 0"]
    assert lines[-1] == "end"
    other = cagent.plan_text(fanout_plan(), worker=1, t0=1700000000.25).splitlines()
    assert [line for line in other if line.startswith("conn")] == ["conn 1 1 m 1", "conn 3 1 m 1"]


def test_reports_name_channels_and_keep_a_second_of_latencies() -> None:
    reports = cagent.Reports(fanout_plan())
    base = {
        "kind": "tick",
        "connections": 3,
        "ready_in": {"1": 2},
        "acked_in": {"0": 5},
        "recent": {"10": 1},
    }
    first = reports.translate(base)
    assert first["ready_in"] == {"lt.fanout.1": 2} and first["acked_in"] == {"lt.fanout.0": 5}
    assert "kind" not in first and first["connections"] == 3
    for _ in range(cagent.RECENT - 1):
        last = reports.translate({**base, "recent": {"10": 2, "12": 1}})
    assert last["recent"] == {10: 1 + 2 * (cagent.RECENT - 1), 12: cagent.RECENT - 1}
    later = reports.translate({**base, "recent": {}})  # the first report left the window
    assert later["recent"] == {10: 2 * (cagent.RECENT - 1), 12: cagent.RECENT - 1}


def test_the_agent_choice() -> None:
    assert cagent.choose("python", "fanout") == "python"
    assert cagent.choose("auto", "churn") == "python"
    with pytest.raises(cagent.AgentChoiceError, match="churn runs on the Python agent"):
        cagent.choose("c", "churn")
