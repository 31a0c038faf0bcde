"""The benchmark harness runs end to end at tiny N, so it cannot rot. (Its numbers are not
checked here: timing claims belong in bench/RESULTS.md, not in tests.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("load", ["c", "python"])
def test_the_harness_smoke_run_completes_every_scenario(load: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--load", load, "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
