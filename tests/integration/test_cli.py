"""`rtcore serve` as a user runs it: starts, serves, and on SIGTERM closes clients with 1001."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import trio

from rtcore import CloseCode
from tests.integration.raw import RawClient


@pytest.mark.parametrize("module", ["rtcore.cli", "rtcore"])  # python -m rtcore too
async def test_serve_then_sigterm_closes_clients_with_going_away(module: str) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", module, "serve", "--port", "0", "--api-port", "0"],
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            assert proc.stderr is not None
            log = b""
            while (m := re.search(rb"serving on 127\.0\.0\.1:(\d+)", log)) is None:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, log
                log += chunk
            while b"the demo chat: " not in log:  # the start-up line after it
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, log
                log += chunk
            assert f"the demo chat: http://127.0.0.1:{int(m.group(1))}/;".encode() in log
            raw = await RawClient.connect(("127.0.0.1", int(m.group(1))))
            await raw.hello()
            proc.send_signal(signal.SIGTERM)
            assert (await raw.closed()).code == CloseCode.GOING_AWAY
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
