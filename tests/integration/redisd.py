"""A private ``redis-server`` for tests: started on a free loopback port, killed afterwards.

Tests that need Redis take the ``redis_url`` fixture (tests/integration/conftest.py). Without
a ``redis-server`` binary they are skipped, unless ``RTCORE_REQUIRE_REDIS=1`` (set by
``.ci/run``, which installs it): then they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

STARTUP_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisProcess:
    """One redis-server process on 127.0.0.1 (no persistence), restartable on its port."""

    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.workdir,
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGKILL (an outage, not a shutdown) and reap."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def redis_process() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("RTCORE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed and RTCORE_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="rtcore-redis-") as workdir:
        redis = RedisProcess(binary, free_port(), workdir)
        redis.start()
        try:
            yield redis
        finally:
            redis.stop()
