"""The benchmark harness runs end to end at tiny N, so it cannot rot. (Its numbers are not
checked here: timing claims belong in bench/RESULTS.md, not in tests.)"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def smoke_run(load: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench --load LOAD smoke``, once per test session and load."""
    return subprocess.run(
        [sys.executable, "-m", "bench", "--load", load, "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("load", ["c", "python"])
def test_the_harness_smoke_run_completes_every_scenario(load: str) -> None:
    out = smoke_run(load)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr  # every expected delivery arrived
    for heading in ("## burst", "## steady", "## connect", "## presence churn", "## joins"):
        assert heading in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| rtcore")]
    assert len(rows) == 4, out.stdout
    assert sum(line.startswith("| naive") for line in out.stdout.splitlines()) == 4
    joins = [line for line in out.stdout.split("## joins", 1)[1].splitlines() if "| 100 |" in line]
    assert [line.split("|")[1].strip() for line in joins] == (
        ["events off", "diffs", "member_*"] if load == "c" else ["events off"]
    )
    assert ("## storm" in out.stdout) is (load == "c")  # it needs the C client
    if load == "c":
        (storm,) = [line for line in out.stdout.splitlines() if line.startswith("| 50 |")]
        assert len(storm.split("|")) == 6  # clients, setup, recovery, refusals
    # tiny runs say so, and long runs show progress (on stderr: stdout keeps the tables)
    assert "NOT MEANINGFUL as numbers" in out.stdout
    assert "NOT MEANINGFUL: rtcore 1,000 deliveries (< 100,000)" in out.stdout
    assert "burst rtcore, run 1/1 done in" in out.stderr


def test_the_smoke_run_covers_two_nodes_over_redis() -> None:
    """With the C load, the smoke run includes the two-node scenarios over a private Redis
    (skipped without redis-server, unless RTCORE_REQUIRE_REDIS=1, as tests/integration/
    redisd.py does for every Redis test)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("RTCORE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and RTCORE_REQUIRE_REDIS=1")
        assert "nodes-burst, nodes-steady: SKIPPED" in smoke_run("c").stdout
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    out = smoke_run("c")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr  # every expected delivery arrived
    burst = out.stdout.split("## nodes burst", 1)[1].split("## nodes steady", 1)[0]
    steady = out.stdout.split("## nodes steady", 1)[1]
    burst_rows, steady_rows = table_rows(burst), table_rows(steady)
    assert [r["layout"] for r in burst_rows] == ["1 node, memory broker", "2 nodes over Redis"]
    assert [r["layout"] for r in steady_rows] == ["2 nodes over Redis"]
    assert [r["deliveries"] for r in burst_rows] == ["1,000", "1,000"]  # 20 subscribers x 50
    assert steady_rows[0]["deliveries"] == "250"  # 10 subscribers x 50/s x 0.5 s
    # the burst's subscribers split across the nodes; the steady run's all on the node
    # without the publisher, so every delivery crossed Redis
    assert [r["subscribers per node"] for r in burst_rows] == ["20", "10 + 10"]
    assert steady_rows[0]["subscribers per node"] == "0 + 10"
    # Redis saw one publish per message (from its INFO commandstats), not one per subscriber;
    # the memory broker has no Redis figures
    column = "Redis publishes per message"
    assert [r[column] for r in burst_rows] == ["—", "1.000"]
    assert steady_rows[0][column] == "1.000"
    assert "- one Redis publish per message: 1.000: met" in burst
    assert "cross-node p99 <= 10 ms at 500 deliveries/s" in steady
    assert "nodes burst redis-2, run 1/1 done in" in out.stderr


def table_rows(section: str) -> list[dict[str, str]]:
    """The first markdown table in ``section``, as dicts by column header."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


@pytest.mark.parametrize(
    ("command", "shows"),
    [
        (["bench.observe_cost", "-n", "10", "--passes", "2", "--rounds", "2"], "on / off: "),
        (["bench.member_memory", "--members", "200", "--channels", "2"], "| index |"),
        (["bench.fanout_design", "-n", "20", "-m", "40", "--rounds", "1"], "| outbox |"),
        (["bench.value_cost", "--size", "2000", "--repeat", "2"], "| 60K empty arrays (refused) |"),
        (["bench.join_cost", "-n", "20", "--rounds", "1"], "| 256 grants | "),
        (
            ["bench.gc_pause", "-n", "50", "--rounds", "1"],  # (needs cc, as CI has)
            "| cyclic garbage per closed connection (objects) | 0.00 |",
        ),
        (
            ["bench.hooks", "--joins", "20", "--sends", "20", "--conns", "4"],
            "webhook events delivered: ",
        ),
    ],
)
def test_the_in_process_benchmarks_run(command: list[str], shows: str) -> None:
    # observe_cost once rotted unnoticed (App.send's clock argument was renamed): no more.
    out = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert shows in out.stdout, out.stdout


def test_the_bystander_scenario_runs_at_tiny_size() -> None:
    """``python -m bench bystander`` (issue 20) end to end: a quiet phase and an attacked one,
    each with the bystander's latencies; its numbers are the lead's to measure, not checked."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--load", "python", "bystander", "--seconds", "0.5"]
        + ["--senders", "1", "--churners", "2", "--interval", "0.05"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    section = out.stdout.split("## bystander: 1 senders of the costliest message", 1)[1]
    rows = table_rows(section)
    assert [r["phase"] for r in rows] == ["quiet", "attacked"]
    assert all(int(r["pings"]) > 0 for r in rows)
    assert all(r["bystander closed"] == "none" for r in rows)
    sends, ops = (int(x.split()[0]) for x in rows[1]["load done"].split(", "))
    assert sends > 0 and ops > 0  # the attack ran: costliest messages accepted, churn admitted


def test_the_chaos_soak_command_line_parses_and_builds_its_load() -> None:
    """Its run is tests/integration/test_chaos_nodes.py's harness (run there, short): here,
    that the command the lead runs for bench/RESULTS.md starts and takes its options."""
    from bench.scenarios import chaos_soak

    out = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.chaos_soak", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--aof" in out.stdout and "--minutes" in out.stdout
    args = chaos_soak.build_parser().parse_args(["--minutes", "0.5", "--aof"])
    assert (args.minutes, args.aof, args.subscribers, args.publishers) == (0.5, True, 100, 6)


def test_the_rooms_scenario_runs_at_tiny_size() -> None:
    """``python -m bench rooms`` (issue 22): the burst, the rooms with and without churn and the
    raw and C servers in one invocation, every delivery owed counted; its numbers are the lead's."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "rooms", "-n", "20", "--room-size", "10"]
        + ["--senders", "2", "--rate", "20", "--seconds", "1", "--churn", "5", "--churners", "2"]
        + ["--burst-n", "20", "--burst-m", "10000"]  # several clock ticks of CPU
        + ["--shapes", "burst,rooms,rooms+churn,rooms-raw,rooms-c"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr  # every expected delivery arrived
    rows = table_rows(out.stdout.split("## rooms: 20 members in rooms of 10", 1)[1])
    assert [r["shape"] for r in rows] == [
        "burst: 20 in one channel",
        "20 in rooms of 10",
        "20 in rooms of 10, churn",
        "raw server: 20 in rooms of 10",
        "c-ceiling server: 20 in rooms of 10",
    ]
    # 2 rooms x 20 messages (2 senders x 10) x 9 other members; the burst 20 x 10,000
    assert [r["deliveries"] for r in rows] == ["200,000", "360", "360", "360", "360"]
    assert rows[0]["µs/delivery vs burst"] == "1.00x"
    assert all(r["µs/delivery vs burst"].endswith("x") for r in rows[1:])
    assert float(rows[2]["churn cycles/s"]) > 0 and float(rows[1]["churn cycles/s"]) == 0
    assert all(float(r["p99 ms"]) > 0 for r in rows[1:])  # latencies were sampled
    assert all(r["refused"] == "0" for r in rows)


def test_the_send_cost_benchmark_runs_at_tiny_size() -> None:
    """``python -m bench.send_cost`` (issue 22): the in-process cost of a message in small
    rooms; it checks itself that each message queued its deliveries and its ok."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.send_cost", "--rooms", "2", "--room-size", "5"]
        + ["-m", "10", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = table_rows(out.stdout.split("## send cost: 2 rooms of 5", 1)[1])
    assert float(row["µs CPU per message"]) > 0
