"""The README's five-minute tour runs as written (against a test server)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from rtcore import Server
from tests.integration.conftest import url

ROOT = Path(__file__).resolve().parents[2]


async def test_the_readme_tour_runs(server: Server) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert "ws://127.0.0.1:8765/" in tour
    code = tour.replace("ws://127.0.0.1:8765/", url(server))
    with trio.fail_after(30):
        out = await trio.run_process(
            [sys.executable, "-c", code], capture_stdout=True, capture_stderr=True, check=False
        )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    printed = out.stdout.decode()
    assert "bob got chat {'text': 'hi'}" in printed
    assert "bob got chat {'text': 'psst'}" in printed
    assert "ann got Msg" in printed
