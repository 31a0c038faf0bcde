"""Two nodes in their own processes over Redis, behind a load balancer, while history
traffic flows: Redis stalled, killed and restarted, a node killed and a node drained
(tests/integration/chaos_nodes.py). Every subscriber gets each acknowledged message once, in
order, or is told it was not recovered; no refused send is delivered; no client is stuck;
member lists end exact. About half a minute."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.chaos_nodes import FAULTS, Load, run_chaos

pytestmark = pytest.mark.slow


async def test_under_faults_a_refusal_is_refused_and_nothing_is_missed_silently() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    report = await run_chaos(Load(period=3.0, stall=2.0))
    print("\n".join(report.lines()))
    assert report.faults == list(FAULTS)
    assert report.acked > 100, report.lines()  # traffic flowed
    assert report.verdict.refused_delivered == 0, report.lines()
    assert report.verdict.missed_silently == 0, report.lines()
    assert report.verdict.duplicates == 0 and report.verdict.out_of_order == 0, report.lines()
    assert report.stuck == 0, report.lines()
    assert report.members_exact, report.lines()
