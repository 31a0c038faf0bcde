"""A private ``redis-server`` for tests: started on a free loopback port, killed afterwards.

Tests that need Redis take the ``redis_url`` fixture (tests/integration/conftest.py). Without
a ``redis-server`` binary they are skipped, unless ``RTCORE_REQUIRE_REDIS=1`` (set by
``.ci/run``, which installs it): then they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import random
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
CLUSTER_CREATE_SECONDS = 30.0
"""``redis-cli --cluster create`` waits for the nodes to agree (seconds on a busy machine)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port(rng: random.Random) -> int:
    """A free port whose cluster-bus port (port + 10000) is free too: below 55536."""
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


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

    def start(self, *extra: str) -> None:
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
                *extra,
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


@contextmanager
def redis_cluster(shards: int = 3) -> Iterator[list[RedisProcess]]:
    """A Redis Cluster of ``shards`` primaries (no replicas) on loopback, made with
    ``redis-cli --cluster create`` (same Debian package as redis-server)."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        if os.environ.get("RTCORE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server/redis-cli are not installed and RTCORE_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="rtcore-redis-cluster-") as workdir:
        nodes: list[RedisProcess] = []
        rng = random.Random()
        try:
            for i in range(shards):
                path = os.path.join(workdir, str(i))
                os.mkdir(path)
                node = RedisProcess(binary, free_cluster_port(rng), path)
                nodes.append(node)
                node.start("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
            addresses = [f"127.0.0.1:{n.port}" for n in nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=CLUSTER_CREATE_SECONDS,
            )  # fmt: skip
            _wait_cluster_ok(cli, nodes)
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def _wait_cluster_ok(cli: str, nodes: list[RedisProcess]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        states = [
            subprocess.run(
                [cli, "-p", str(n.port), "cluster", "info"], capture_output=True, timeout=5
            ).stdout
            for n in nodes
        ]
        if all(b"cluster_state:ok" in s for s in states):
            return
        time.sleep(0.05)
    raise RuntimeError("the Redis Cluster did not become ready")
