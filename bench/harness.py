"""The harness's processes: the server under test (``bench.servers``), load processes
(``rtcore.loadtest.counting``, or the C subscriber ``rtcore/loadtest/csrc/csub.c``:
the load clients ``rtcore loadtest`` ships), fleets of them ready and quiet, and what
the servers spent (CPU) while a scenario measured."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import peers
from rtcore.loadtest import counting as load
from rtcore.loadtest import native
from rtcore.loadtest.native import CSubscriber

CTX = mp.get_context("fork")
TICK = os.sysconf("SC_CLK_TCK")


SERVER_ARGS: list[str] = []


class ServerProc:
    def __init__(self, kind: str, presence: bool = True, options: tuple[str, ...] = ()) -> None:
        self.kind = kind
        extra = [*SERVER_ARGS, *options] if kind.startswith("rtcore") else []
        if kind == "naive" and not presence:
            extra = ["--no-presence"]
        argv = [sys.executable, "-m", "bench.servers", kind, *extra]
        if peers.is_peer(kind):  # started directly: /proc's CPU and RSS are the peer's own
            argv = peers.command(kind)
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.address = ("127.0.0.1", int(line.split()[1]))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class LoadProc:
    def __init__(self, target: Any, *args: Any) -> None:
        self.pipe, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def call(self, cmd: str, **args: Any) -> None:
        self.pipe.send((cmd, args))

    def result(self, timeout: float = 600.0) -> Any:
        if not self.pipe.poll(timeout):
            raise TimeoutError("a load process did not answer")
        kind, value = self.pipe.recv()
        if kind == "error":
            raise RuntimeError(f"load process failed: {value}")
        return value

    def stop(self) -> None:
        try:
            self.pipe.send(("quit", {}))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def build_csub(name: str = "csub") -> bool:
    """Compile a C load client (rtcore/loadtest/csrc/NAME.c) if needed; False without cc."""
    return native.build(name)


LOAD = {"c": True}


def subscriber(
    address: tuple[str, int],
    n: int,
    channel: str | None,
    features: tuple[str, ...] = (),
    pipeline: bool = False,
) -> Any:
    if LOAD["c"]:
        return CSubscriber(address, n, channel, features, pipeline)
    if features or pipeline:
        raise SystemExit("this scenario needs the C load client (rtcore/loadtest/csrc/csub.c, cc)")
    return LoadProc(load.subscriber_main, address, n, channel)


def split(n: int, procs: int) -> list[int]:
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


@contextmanager
def fleet(
    kind: str, subscribers: int, procs: int, channel: str | None, publisher: str | None = None
) -> Iterator[tuple[ServerProc, list[LoadProc], LoadProc | None]]:
    """A server, subscriber processes (ready and quiet), and optionally a publisher/churner.

    The naive baseline announces joins only where presence is measured (churn): in the other
    scenarios its presence fan-out would only slow the setup (by ~20 min at 5,000 members).
    """
    server = ServerProc(kind, presence=publisher == "churner")
    subs: list[LoadProc] = []
    pub = None
    try:
        for n in split(subscribers, procs):
            subs.append(subscriber(server.address, n, channel))
        for s in subs:
            s.result()
        if publisher is not None:
            pub = LoadProc(load.publisher_main, server.address, channel, publisher == "publisher")
            pub.result()
        quiesce([*subs, *([pub] if pub else [])])
        yield server, subs, pub
    finally:
        for p in [*subs, *([pub] if pub else [])]:
            p.stop()
        server.stop()


def quiesce(procs: list[Any]) -> None:
    """Wait until every load process has stopped receiving (setup's frames all read)."""
    for p in procs:
        p.call("quiesce")
    for p in procs:
        p.result()


def gather(subs: list[LoadProc], timeout: float) -> dict[str, Any]:
    results = [s.result(timeout + 30) for s in subs]
    return {
        "total": sum(r["total"] for r in results),
        "last": max(r["last"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "sampled_at": [x for r in results for x in r.get("sampled_at", ())],
        "closed": sum(r["closed"] for r in results),
    }


def pad_for(size: int) -> int:
    # A delivered msg frame without data padding is ~106 bytes (ids, timestamps, the t0 float);
    # the padding tops it up to about ``size``.
    return max(0, size - 106)


def server_cpu(servers: list[Any]) -> list[float]:
    return [s.cpu_seconds() for s in servers]


def cpu_spent(before: list[float], servers: list[Any], seconds: float) -> dict[str, Any]:
    """The CPU the servers spent since ``before``: in all, and each one's share of a core."""
    each = [after - b for after, b in zip(server_cpu(servers), before, strict=True)]
    return {
        "cpu": sum(each) / seconds,
        "cpu_seconds": sum(each),
        "cpu_each": " + ".join(f"{c / seconds:.0%}" for c in each),
    }
