"""Run ``tests.integration.child_server`` in a child process under an open-files limit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]


class Child:
    def __init__(self, proc: trio.Process, log_path: Path, ports: dict[str, Any]) -> None:
        self.proc = proc
        self.log_path = log_path
        self.ws = (ports["ws"][0], int(ports["ws"][1]))
        self.api = (ports["api"][0], int(ports["api"][1]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"ws://{self.ws[0]}:{self.ws[1]}/"

    @property
    def api_url(self) -> str:
        return f"http://{self.api[0]}:{self.api[1]}"


@asynccontextmanager
async def child_server(tmp: Path, config: str, nofile: int) -> AsyncIterator[Child]:
    """Serve ``config`` (TOML) in a child process with RLIMIT_NOFILE ``nofile``; shut it down
    (SIGTERM) on exit. The caller bounds the time (trio.fail_after)."""
    path = tmp / "child.toml"
    path.write_text(config)
    log_path = tmp / "child.log"
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.integration.child_server", str(path), str(nofile)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
    try:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"the child server did not start:\n{log_path.read_text()}")
            line += chunk
        yield Child(proc, log_path, json.loads(line))
    finally:
        with trio.move_on_after(10) as waiting:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
        if waiting.cancelled_caught:
            proc.kill()
            await proc.wait()
