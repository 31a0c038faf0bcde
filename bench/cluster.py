"""Processes for the multi-node scenarios (``nodes-burst``, ``nodes-steady``): a private
``redis-server`` and rtcore nodes, each ``rtcore serve --config <generated TOML>``.

Every node gets the configuration the single-process harness server (``bench.servers``)
uses -- defaults but for the heartbeat, pushed past any run's length (the load generator
never answers pings), and the per-IP connection caps, lifted (all the load comes from
127.0.0.1) -- plus its ``[broker]`` table. The one-node baseline is the same command with
``kind = "memory"``, so the layouts differ only in the broker and the number of nodes.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")
STARTUP_SECONDS = 30.0
"""How long a node or Redis may take to become ready (a busy machine is slow to import)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def write_calls(pid: int) -> int:
    """``write``-family syscalls a process made so far (``/proc/<pid>/io`` syscw): rtcore
    writes to clients with ``os.write``, so this counts its client writes (a socket ``send``,
    as trio's sockets do to Redis, is not counted)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def redis_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rtcore-bench-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_SECONDS
        while self.command("PING") != b"PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *words: str) -> bytes | None:
        """One inline command's reply (a status or bulk string); None if Redis is not up."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(" ".join(words).encode() + b"\r\n")
                return _read_reply(s)
        except OSError:
            return None

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict of its ``key:value`` lines."""
        text = (self.command("INFO", section) or b"").decode()
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
        )

    def command_calls(self) -> dict[str, int]:
        """Calls per command so far (``INFO commandstats``; commands run by scripts count)."""
        calls = {}
        for key, value in self.info("commandstats").items():
            fields = dict(kv.split("=", 1) for kv in value.split(","))
            calls[key.removeprefix("cmdstat_")] = int(fields["calls"])
        return calls

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def version(self) -> str:
        return self.info("server").get("redis_version", "?")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._dir.cleanup()


def _read_reply(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        buf += chunk
    head, rest = buf.split(b"\r\n", 1)
    if head[:1] in (b"+", b":"):
        return head[1:]
    if head[:1] == b"-":
        raise RuntimeError(f"Redis: {head[1:].decode()}")
    size = int(head[1:])  # a bulk string
    while len(rest) < size + 2:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        rest += chunk
    return rest[:size]


def node_toml(
    port: int,
    api_port: int,
    broker_url: str | None,
    outbound_buffer: int,
    presence_events: bool = True,
) -> str:
    """A node's configuration: ``broker_url`` None is the memory broker (one process)."""
    broker = (
        f'[broker]\nkind = "redis"\nurl = "{broker_url}"\n'
        if broker_url
        else '[broker]\nkind = "memory"\n'
    )
    if not presence_events:
        broker += (
            '\n[[apps]]\nname = "default"\n\n[[apps.channels]]\npattern = "*"\n'
            "presence_events = false\n"
        )
    return (
        "[server]\n"
        f'host = "127.0.0.1"\nport = {port}\napi_host = "127.0.0.1"\napi_port = {api_port}\n\n'
        "[limits]\n"
        f"outbound_buffer_bytes = {outbound_buffer}\n"
        "heartbeat_interval = 600.0\n"
        "max_connections_per_ip = 1000000\n"
        "connect_rate_per_ip = 1e9\n"
        "connect_burst_per_ip = 1000000\n\n"
        f"{broker}"
    )


class Node:
    """``rtcore serve --config FILE`` (the command users run) on free loopback ports; ready
    once its ``/readyz`` says so (for a Redis node: connected to Redis)."""

    def __init__(
        self,
        broker_url: str | None,
        outbound_buffer: int = 1024 * 1024,
        *,
        workers: int = 1,
        presence_events: bool = True,
    ) -> None:
        self.kind = "rtcore"
        port, self.api_port = free_port(), free_port()
        self._config = tempfile.NamedTemporaryFile(
            "w", prefix="rtcore-bench-node-", suffix=".toml", delete=False
        )
        with self._config:
            self._config.write(
                node_toml(port, self.api_port, broker_url, outbound_buffer, presence_events)
            )
        self.proc = subprocess.Popen(
            [
                sys.executable, "-c", "import sys; from rtcore.cli import main; sys.exit(main())",
                "serve", "--config", self._config.name, "--log-level", "WARNING",
                "--workers", str(workers),
            ]
        )  # fmt: skip
        self.address = ("127.0.0.1", port)
        self.workers = workers

    def await_ready(self) -> None:
        """Wait for ``/readyz`` (nodes start in parallel: start them all, then wait)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rtcore node ({self._config.name}) did not become ready")
            time.sleep(0.05)

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def pids(self) -> list[int]:
        """The node's processes: with workers, the supervisor and its children."""
        if self.workers == 1:
            return [self.proc.pid]
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [self.proc.pid, *map(int, f.read().split())]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def write_calls(self) -> int:
        return write_calls(self.proc.pid)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.unlink(self._config.name)


class WorkersServer:
    """``rtcore serve --workers N`` over a private Redis, as the ``joins`` scenario's server
    (``--workers``): the same interface as the harness's ServerProc."""

    def __init__(self, workers: int, presence_events: bool) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("--workers needs redis-server (the Redis broker)")
        self.redis = RedisServer(binary)
        try:
            self.node = Node(self.redis.url, workers=workers, presence_events=presence_events)
            self.node.await_ready()
            _await_workers(self.node, workers)
        except BaseException:
            self.redis.stop()
            raise
        self.address = self.node.address

    def cpu_seconds(self) -> float:
        return self.node.cpu_seconds()

    def stop(self) -> None:
        self.node.proc.terminate()  # the supervisor stops its workers
        try:
            self.node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.node.proc.kill()
            self.node.proc.wait()
        os.unlink(self.node._config.name)
        self.redis.stop()


def _await_workers(node: Node, workers: int) -> None:
    """/readyz answers from whichever worker takes it: wait until all are up (a process each)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(node.pids()) < workers + 1 or not node._ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not all start")
        time.sleep(0.05)
    time.sleep(0.5)  # each worker listening (the supervisor starts them one after another)
