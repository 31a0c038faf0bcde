"""rtcore benchmark harness: ``python -m bench SCENARIO --help`` (burst, steady, connect, churn,
joins, storm, nodes-burst, nodes-steady, all, smoke).

Every scenario starts each server under test in its own process (``bench.servers``), drives it
from separate load processes (``bench.load``), and prints a markdown table with the ratio to
the naive trio-websocket baseline measured in the same invocation. The ``raw`` server shows
the load generator's own ceiling on this machine. The ``nodes-*`` scenarios run rtcore nodes
(``rtcore serve``) over a private ``redis-server`` (``bench.cluster``) and compare them with
one node in the same invocation.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import cluster, load, wire

CTX = mp.get_context("fork")
TICK = os.sysconf("SC_CLK_TCK")


# -- processes --------------------------------------------------------------------------------


SERVER_ARGS: list[str] = []


class ServerProc:
    def __init__(self, kind: str, presence: bool = True, options: tuple[str, ...] = ()) -> None:
        self.kind = kind
        extra = [*SERVER_ARGS, *options] if kind.startswith("rtcore") else []
        if kind == "naive" and not presence:
            extra = ["--no-presence"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, *extra],
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


HERE = os.path.dirname(os.path.abspath(__file__))
CSUB = os.path.join(HERE, "out", "csub")


def build_csub(name: str = "csub") -> bool:
    """Compile a C load client (bench/NAME.c) if needed; False if there is no C compiler."""
    source = os.path.join(HERE, f"{name}.c")
    binary = os.path.join(HERE, "out", name)
    if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(source):
        return True
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    try:
        subprocess.run(["cc", "-O2", "-o", binary, source], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"note: no C subscriber ({exc}); using the Python one", file=sys.stderr)
        return False
    return True


class CSubscriber:
    """bench/csub.c driven over stdin/stdout, with LoadProc's interface."""

    def __init__(
        self,
        address: tuple[str, int],
        n: int,
        channel: str | None,
        features: tuple[str, ...] = (),
        pipeline: bool = False,
    ) -> None:
        hello: dict[str, Any] = {"features": list(features)} if features else {}
        first = wire.request(t="hello", v=1, echo=False, **hello)
        if channel:
            first += wire.request(t="join", id=1, ch=channel)
        self.proc = subprocess.Popen(
            [CSUB, address[0], str(address[1]), str(n), first.hex(), *(["pipeline"] * pipeline)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pending: str | None = "ready"

    def call(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        if cmd == "count":
            line = f"count {args['expected']} {args['timeout']} {args.get('sample_every', 0)}"
        else:
            line = cmd
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.pending = cmd

    def result(self, timeout: float = 600.0) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] == "error":
            raise RuntimeError(f"C subscriber failed: {' '.join(line) or 'exited'}")
        if line[0] == "ready":
            return float(line[1])
        if line[0] == "quiet":
            return int(line[1])
        total, first, last, closed, minpeer, nsamples = line[1:]
        latencies = [float(self.proc.stdout.readline()) for _ in range(int(nsamples))]
        return {
            "total": int(total),
            "first": float(first),
            "last": float(last),
            "closed": int(closed),
            "min_per_peer": int(minpeer),
            "latencies": latencies,
        }

    def stop(self) -> None:
        try:
            self.call("quit")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


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
        raise SystemExit("this scenario needs the C load client (bench/csub.c and cc)")
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
        for p in [*subs, *([pub] if pub else [])]:
            p.call("quiesce")
        for p in [*subs, *([pub] if pub else [])]:
            p.result()
        yield server, subs, pub
    finally:
        for p in [*subs, *([pub] if pub else [])]:
            p.stop()
        server.stop()


def gather(subs: list[LoadProc], timeout: float) -> dict[str, Any]:
    results = [s.result(timeout + 30) for s in subs]
    return {
        "total": sum(r["total"] for r in results),
        "last": max(r["last"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "closed": sum(r["closed"] for r in results),
    }


# -- scenarios --------------------------------------------------------------------------------


def pad_for(size: int) -> int:
    # A delivered msg frame without data padding is ~106 bytes (ids, timestamps, the t0 float);
    # the padding tops it up to about ``size``.
    return max(0, size - 106)


def run_burst(kind: str, n: int, messages: int, size: int, procs: int) -> dict[str, Any]:
    with fleet(kind, n, procs, "bench", publisher="publisher") as (server, subs, pub):
        assert pub is not None
        shares = list(zip(subs, split(n, procs), strict=True))
        return {"server": kind, **measure_burst([server], shares, pub, messages, size)}


def measure_burst(
    servers: list[Any], subs: list[tuple[Any, int]], pub: LoadProc, messages: int, size: int
) -> dict[str, Any]:
    """One burst of ``messages`` from ``pub`` to ``subs`` (each with its subscriber count);
    the CPU and RSS are summed over ``servers``."""
    n = sum(share for _, share in subs)
    expected = n * messages
    timeout = expected / 20_000 + 30
    cpu0 = server_cpu(servers)
    for s, share in subs:
        s.call("count", expected=share * messages, timeout=timeout)
    pub.call("burst", messages=messages, pad=pad_for(size), timeout=timeout)
    started = pub.result(timeout + 30)["start"]
    got = gather([s for s, _ in subs], timeout)
    seconds = got["last"] - started
    return {
        "N": n,
        "M": messages,
        "size": size,
        "deliveries": got["total"],
        "expected": expected,
        "seconds": seconds,
        "rate": got["total"] / seconds,
        **cpu_spent(cpu0, servers, seconds),
        "rss_mb": sum(s.rss_bytes() for s in servers) / 2**20,
    }


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


def run_steady(
    kind: str, n: int, rate: float, seconds: float, size: int, procs: int
) -> dict[str, Any]:
    with fleet(kind, n, procs, "bench", publisher="publisher") as (server, subs, pub):
        assert pub is not None
        shares = list(zip(subs, split(n, procs), strict=True))
        return {"server": kind, **measure_steady([server], shares, pub, rate, seconds, size)}


def measure_steady(
    servers: list[Any],
    subs: list[tuple[Any, int]],
    pub: LoadProc,
    rate: float,
    seconds: float,
    size: int,
) -> dict[str, Any]:
    """``rate`` messages/s for ``seconds`` from ``pub`` to ``subs``; latency percentiles."""
    n = sum(share for _, share in subs)
    expected = int(rate * seconds) * n
    cpu0 = server_cpu(servers)
    for s, share in subs:
        s.call("count", expected=share * int(rate * seconds), timeout=seconds + 15, sample_every=7)
    pub.call("steady", rate=rate, seconds=seconds, pad=pad_for(size))
    sent = pub.result(seconds + 60)
    got = gather([s for s, _ in subs], seconds + 15)
    elapsed = got["last"] - sent["start"]
    lat = sorted(got["latencies"])
    return {
        "N": n,
        "rate_in": rate,
        "size": size,
        "expected": expected,
        "deliveries": got["total"],
        "rate": got["total"] / elapsed,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "p999": pct(lat, 99.9),
        "samples": len(lat),
        **cpu_spent(cpu0, servers, elapsed),
        "rss_mb": sum(s.rss_bytes() for s in servers) / 2**20,
    }


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k] * 1000


def run_connect(kind: str, n: int, procs: int) -> dict[str, Any]:
    server = ServerProc(kind)
    subs: list[LoadProc] = []
    try:
        warm = subscriber(server.address, 10, None)
        warm.result()
        time.sleep(0.5)
        rss0 = server.rss_bytes()
        start = time.monotonic()
        for share in split(n, procs):
            subs.append(subscriber(server.address, share, None))
        setup = max(s.result() for s in subs)
        elapsed = time.monotonic() - start
        time.sleep(1.0)
        rss1 = server.rss_bytes()
        warm.stop()
        return {
            "server": kind,
            "N": n,
            "seconds": elapsed,
            "setup": setup,
            "rate": n / elapsed,
            "rss_per_conn": (rss1 - rss0) / n,
            "rss_mb": rss1 / 2**20,
        }
    finally:
        for s in subs:
            s.stop()
        server.stop()


def run_churn(kind: str, n: int, pairs: int, procs: int) -> dict[str, Any]:
    with fleet(kind, n, procs, "churn", publisher="churner") as (server, subs, pub):
        assert pub is not None
        expected = 2 * pairs * n
        timeout = expected / 20_000 + 30
        cpu0 = server.cpu_seconds()
        for s, share in zip(subs, split(n, procs), strict=True):
            s.call("count", expected=2 * pairs * share, timeout=timeout)
        pub.call("churn", channel="churn", pairs=pairs, timeout=timeout)
        started = pub.result(timeout + 30)["start"]
        got = gather(subs, timeout)
        seconds = got["last"] - started
        return {
            "server": kind,
            "N": n,
            "pairs": pairs,
            "expected": expected,
            "deliveries": got["total"],
            "seconds": seconds,
            "joins": pairs / seconds,
            "rate": got["total"] / seconds,
            "cpu": (server.cpu_seconds() - cpu0) / seconds,
        }


JOIN_MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # mode: (server options, hello features)
    "events off": (("--no-presence-events",), ()),
    "diffs": ((), ("presence_diffs",)),
    "member_*": ((), ()),
}
PIPELINED = " pipelined"
"""A mode's suffix: the clients send hello and join right behind the upgrade request (as the
Python client does) instead of after the 101 (as browsers must)."""


def run_joins(mode: str, n: int, procs: int, workers: int = 1) -> dict[str, Any]:
    """N connections (upgrade, hello, join) into one channel, from the first connect to the
    last join's ok, with presence events off, as batched diffs, or one member_* per join.
    ``workers`` > 1: ``rtcore serve --workers`` over a private Redis instead (bench.cluster)."""
    pipeline = mode.endswith(PIPELINED)
    options, features = JOIN_MODES[mode.removesuffix(PIPELINED)]
    server: Any
    if workers > 1:
        from bench.cluster import WorkersServer

        server = WorkersServer(workers, presence_events="--no-presence-events" not in options)
        mode = f"{mode}, {workers} workers"
    else:
        server = ServerProc("rtcore", options=options)
    subs: list[Any] = []
    try:
        cpu0 = server.cpu_seconds()
        start = time.monotonic()
        for share in split(n, procs):
            subs.append(subscriber(server.address, share, "big", features, pipeline))
        setup = max(s.result() for s in subs)
        elapsed = time.monotonic() - start
        return {
            "server": mode,
            "N": n,
            "seconds": elapsed,
            "setup": setup,
            "rate": n / elapsed,
            "cpu_s": server.cpu_seconds() - cpu0,
        }
    finally:
        for s in subs:
            s.stop()
        server.stop()


class CStorm:
    """bench/cstorm.c: N clients that reconnect with the Python client's jittered backoff."""

    def __init__(self, address: tuple[str, int], n: int, ips: int) -> None:
        first = wire.request(t="hello", v=1, echo=False, features=["presence_diffs"])
        first += wire.request(t="join", id=1, ch="storm")
        binary = os.path.join(HERE, "out", "cstorm")
        args = [binary, address[0], str(address[1]), str(n), first.hex(), str(ips)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self) -> list[str]:
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if not words or words[0] == "error":
            raise RuntimeError(f"cstorm failed: {' '.join(words) or 'exited'}")
        return words

    def storm(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("storm\n")
        self.proc.stdin.flush()

    def recovered(self) -> tuple[float, dict[str, int]]:
        seconds = float(self.line()[1])
        refusals: dict[str, int] = {}
        while (words := self.line())[0] != "end":
            refusals[words[1]] = int(words[2])
        return seconds, refusals

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_storm(n: int, ips: int) -> dict[str, Any]:
    """N clients (hello with presence diffs, join one channel) from ``ips`` loopback
    addresses, under the default per-IP limits; the server is killed and started again on
    the same port; time until every client is back and rejoined, refusals by kind."""
    options = ("--per-ip-limits",)
    server = ServerProc("rtcore", options=options)
    clients = CStorm(server.address, n, ips)
    try:
        setup = float(clients.line()[1])
        clients.storm()
        server.stop()  # a crash: SIGKILL, every connection reset
        server = ServerProc("rtcore", options=(*options, "--port", str(server.address[1])))
        seconds, refusals = clients.recovered()
        return {
            "server": "rtcore",
            "N": n,
            "ips": ips,
            "setup": setup,
            "seconds": seconds,
            "rate": n / seconds,
            "refusals": ", ".join(f"{k}: {v:,}" for k, v in sorted(refusals.items())) or "none",
        }
    finally:
        clients.stop()
        server.stop()


# -- output -----------------------------------------------------------------------------------


# -- several nodes over Redis (bench/cluster.py) -----------------------------------------------

LAYOUTS = {
    "memory": (1, False, "1 node, memory broker"),
    "redis-1": (1, True, "1 node over Redis"),
    "redis-2": (2, True, "2 nodes over Redis"),
}
"""``--layouts`` names: (nodes, over Redis, the row's label)."""
REDIS_COMMANDS = ("publish", "spublish")
"""The commands that carry a channel message across nodes."""
PROCS = {"n": 1}
"""Subscriber load processes per node (``--procs``)."""


@contextmanager
def node_fleet(
    layout: str, n: int, procs: int, remote: bool
) -> Iterator[
    tuple[list[cluster.Node], cluster.RedisServer | None, list[tuple[Any, int]], Any, list[int]]
]:
    """A private Redis (for a Redis layout), its nodes, subscribers, the publisher, and how
    many subscribers each node has.

    The publisher (a member, echo off) is on the first node; the ``n`` subscribers are split
    evenly across the nodes, or with ``remote`` all on the last one (``procs`` load processes
    per node that has subscribers)."""
    count, over_redis, _ = LAYOUTS[layout]
    redis: cluster.RedisServer | None = None
    nodes: list[cluster.Node] = []
    subs: list[tuple[Any, int]] = []
    pub = None
    try:
        if over_redis:
            binary = cluster.redis_binary()
            if binary is None:
                raise SystemExit("the nodes-* scenarios need redis-server (on PATH)")
            redis = cluster.RedisServer(binary)
        for _ in range(count):
            nodes.append(cluster.Node(redis.url if redis else None))
        for node in nodes:
            node.await_ready()
        placed = [0] * (count - 1) + [n] if remote else split(n, count)
        for node, share in zip(nodes, placed, strict=True):
            for k in split(share, procs) if share else []:
                subs.append((subscriber(node.address, k, "bench"), k))
        for s, _ in subs:
            s.result()
        pub = LoadProc(load.publisher_main, nodes[0].address, "bench", True)
        pub.result()
        everyone = [*(s for s, _ in subs), pub]
        for p in everyone:
            p.call("quiesce")
        for p in everyone:
            p.result()
        yield nodes, redis, subs, pub, placed
    finally:
        for p in [*(s for s, _ in subs), *([pub] if pub else [])]:
            p.stop()
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()


def run_nodes(layout: str, part: str, n: int, *shape: Any) -> dict[str, Any]:
    """One ``burst`` (shape: messages, size) or ``steady`` (rate, seconds, size) run of a
    layout; with Redis, what Redis spent and how many publishes it saw, too."""
    remote = part == "steady"  # cross-node latency: every subscriber on the other node
    with node_fleet(layout, n, PROCS["n"], remote) as (nodes, redis, subs, pub, placed):
        calls0 = redis.command_calls() if redis else {}
        redis_cpu0 = redis.cpu_seconds() if redis else 0.0
        writes0 = sum(node.write_calls() for node in nodes)
        measure = measure_burst if part == "burst" else measure_steady
        row: dict[str, Any] = {"server": LAYOUTS[layout][2], **measure(nodes, subs, pub, *shape)}
        row["placed"] = " + ".join(map(str, placed))  # the publisher is on the first node
        row["cpu_per_m"] = row["cpu_seconds"] / max(1, row["deliveries"]) * 1e6
        writes = sum(node.write_calls() for node in nodes) - writes0
        row["per_write"] = row["deliveries"] / max(1, writes)  # how well passes batch
        if redis is not None:
            calls = redis.command_calls()
            sent = row["M"] if part == "burst" else int(shape[0] * shape[1])
            row["publishes"] = sum(calls.get(c, 0) - calls0.get(c, 0) for c in REDIS_COMMANDS)
            row["per_message"] = row["publishes"] / sent
            row["redis_cpu_per_m"] = (
                (redis.cpu_seconds() - redis_cpu0) / max(1, row["deliveries"]) * 1e6
            )
            row["redis"] = redis.version()
        return row


def run_nodes_steady(layout: str, n: int, *shape: Any) -> dict[str, Any]:
    return run_nodes(layout, "steady", n, *shape)


def nodes_burst(args: Any, layouts: list[str], n: int, m: int, size: int) -> None:
    rows = interleaved_runs(
        args.runs,
        layouts,
        lambda k: run_nodes(k, "burst", n, m, size),
        scenario="nodes burst",
        medians=("cpu_per_m", "redis_cpu_per_m"),
    )
    _vs_one_node(rows)
    report(
        f"\n## nodes burst: {n} subscribers in one channel split across the nodes, the publisher "
        f"on the first, ~{size}-byte messages{_redis_note(rows)}\n",
        rows,
        [
            ("server", "layout", ""),
            ("placed", "subscribers per node", ""),
            ("M", "messages", "d"),
            ("deliveries", "deliveries", ",d"),
            ("seconds", "s", ".3f"),
            ("rate", "deliveries/s", ",.0f"),
            ("cpu_each", "server CPU per node", ""),
            ("cpu_per_m", "server CPU s per M deliveries", ".3f"),
            ("per_write", "deliveries per write", ".1f"),
            ("redis_cpu_per_m", "Redis CPU s per M", ".4f"),
            ("per_message", "Redis publishes per message", ".3f"),
            ("rate_ratio", "rate vs 1 node", ".2f"),
            ("cpu_ratio", "CPU/M vs 1 node", ".2f"),
        ],
        baseline="",
    )
    print("\nserver CPU s per M deliveries, the median over the runs (CPU/M vs 1 node is theirs):")
    for r in rows:
        print(f"- {r['server']}: {r['cpu_per_m_median']:.3f}")
    _nodes_targets(rows, n)


def _vs_one_node(rows: list[dict[str, Any]]) -> None:
    """Ratios to the one-node memory run's: of the median rates, and of the medians over the
    runs of the server CPU per delivery (robust to a machine busy with other work)."""
    base = next((r for r in rows if r["server"] == LAYOUTS["memory"][2]), None)
    for r in rows:
        r.setdefault("redis_cpu_per_m", math.nan)
        r.setdefault("per_message", math.nan)
        r["rate_ratio"] = _ratio(r["rate"], base["rate"]) if base else math.nan
        r["cpu_ratio"] = (
            _ratio(r["cpu_per_m_median"], base["cpu_per_m_median"]) if base else math.nan
        )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan  # a tiny run may spend less than a clock tick


def _redis_note(rows: list[dict[str, Any]]) -> str:
    version = next((r["redis"] for r in rows if "redis" in r), None)
    return f" (Redis {version}, private, 127.0.0.1, no persistence)" if version else ""


def _nodes_targets(rows: list[dict[str, Any]], n: int) -> None:
    """The issue's targets for two nodes, met or not, from this invocation's medians."""
    two = next((r for r in rows if r["server"] == LAYOUTS["redis-2"][2]), None)
    if two is None:
        return
    checks = [
        (f"one Redis publish per message: {two['per_message']:.3f}", two["per_message"] == 1.0),
        (f"2 nodes >= 2 M deliveries/s at {n} subscribers: {two['rate']:,.0f}", two["rate"] >= 2e6),
        (f"2 nodes' server CPU per delivery <= 1.25x 1 node's: {two['cpu_ratio']:.2f}x",
         two["cpu_ratio"] <= 1.25),
        (f"2 nodes' rate not lower than 1 node's: {two['rate_ratio']:.2f}x",
         two["rate_ratio"] >= 1.0),
    ]  # fmt: skip
    print("\ntargets (issue 10; ratios to the 1-node memory run):")
    for text, met in checks:
        verdict = "not measured" if "nan" in text else "met" if met else "NOT MET"
        print(f"- {text.replace('nanx', '—')}: {verdict}")


def nodes_steady(
    args: Any, layouts: list[str], n: int, rate: float, seconds: float, size: int
) -> None:
    rows = [  # at a fixed offered rate, the median run is the one with the median p99
        median_run(args.runs, run_nodes_steady, k, n, rate, seconds, size, key="p99")
        for k in layouts
    ]
    for r in rows:
        r.setdefault("per_message", math.nan)
    report(
        f"\n## nodes steady: {n} subscribers, {rate:g} msgs/s for {seconds:g} s "
        f"(offered {n * rate:,.0f} deliveries/s), ~{size}-byte messages; with 2 nodes the "
        f"publisher is on one and every subscriber on the other{_redis_note(rows)}\n",
        rows,
        [
            ("server", "layout", ""),
            ("placed", "subscribers per node", ""),
            ("deliveries", "deliveries", ",d"),
            ("rate", "deliveries/s", ",.0f"),
            ("p50", "p50 ms", ".2f"),
            ("p99", "p99 ms", ".2f"),
            ("p999", "p99.9 ms", ".2f"),
            ("samples", "samples", "d"),
            ("cpu_each", "server CPU per node", ""),
            ("cpu_per_m", "server CPU s per M deliveries", ".3f"),
            ("per_write", "deliveries per write", ".1f"),
            ("per_message", "Redis publishes per message", ".3f"),
        ],
        baseline="",
    )
    two = next((r for r in rows if r["server"] == LAYOUTS["redis-2"][2]), None)
    if two is not None:
        met = two["p99"] <= 10.0
        print(
            f"\ntarget (issue 10): cross-node p99 <= 10 ms at {n * rate:,.0f} deliveries/s: "
            f"{two['p99']:.2f} ms: {'met' if met else 'NOT MET'}"
        )


def table(
    rows: list[dict[str, Any]], cols: list[tuple[str, str, str]], baseline: str = "naive"
) -> str:
    base = next((r for r in rows if r["server"] == baseline), None)
    head = [c[1] for c in cols] + ([f"vs {baseline}"] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r[key], fmt) for key, _, fmt in cols]
        if base:
            cells.append(f"{r['rate'] / base['rate']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"  # not measured (e.g. Redis figures of the one-node memory broker)
    return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}"
    )


def progress(message: str) -> None:
    """A progress line on stderr (stdout keeps only the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median_run(runs: int, fn: Any, *args: Any, key: str = "rate") -> dict[str, Any]:
    """Run ``runs`` times; return the run with the median ``key`` (noisy machines), noting
    every run's value."""
    return _median(
        [
            _timed(f"{fn.__name__.removeprefix('run_')} {args[0]}", i, runs, fn, *args)
            for i in range(runs)
        ],
        key,
    )


def _timed(what: str, i: int, runs: int, fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)``, with progress lines on stderr before and after."""
    what = f"{what}, run {i + 1}/{runs}"
    progress(f"{what} ...")
    started = time.monotonic()
    result: dict[str, Any] = fn(*args)
    progress(f"{what} done in {time.monotonic() - started:.1f} s")
    return result


def interleaved_runs(
    runs: int,
    kinds: list[str],
    fn: Any,
    key: str = "rate",
    scenario: str = "",
    medians: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """``median_run`` for several servers, taking turns (run 1 of each, then run 2...), so
    that a machine getting busier or quieter during the invocation weighs on all alike.

    Each row also gets ``<field>_median``, the median over its runs, for ``cpu_seconds`` and
    the ``medians`` fields (robust to a busy machine: what the server itself spent)."""
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for i in range(runs):
        for k in kinds:
            results[k].append(_timed(f"{scenario} {k}".strip(), i, runs, fn, k))
    rows = [_median(results[k], key) for k in kinds]
    for row, k in zip(rows, kinds, strict=True):
        for field in ("cpu_seconds", *medians):
            if field in row:
                row[f"{field}_median"] = sorted(r[field] for r in results[k])[runs // 2]
    return rows


def _median(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    runs = len(results)
    results.sort(key=lambda r: r[key])
    chosen = dict(results[len(results) // 2])
    if runs > 1:
        unit = {"rate": "deliveries/s", "seconds": "s"}.get(key, f"{key} ms")
        chosen["runs"] = (
            "/".join(f"{r[key]:,.0f}" if key == "rate" else f"{r[key]:.2f}" for r in results)
            + f" {unit}"
        )
    return chosen


MIN_SECONDS = 0.1
"""A measured interval shorter than this says more about start-up noise than throughput."""
MIN_DELIVERIES = 100_000
"""Fewer deliveries than this measure the harness, not the server."""
MIN_SAMPLES = 1000
"""Fewer latency samples than this make p99.9 a guess."""
MIN_CONNECTIONS = 1000
"""Fewer connections than this make RSS per connection a guess."""


def not_meaningful(row: dict[str, Any]) -> str | None:
    """Why a row's numbers should not be quoted, or None."""
    if row.get("seconds", math.inf) < MIN_SECONDS:
        return f"measured over {row['seconds']:.3f} s (< {MIN_SECONDS:g} s)"
    if row.get("deliveries", math.inf) < MIN_DELIVERIES:
        return f"{row['deliveries']:,} deliveries (< {MIN_DELIVERIES:,})"
    if row.get("samples", math.inf) < MIN_SAMPLES:
        return f"{row['samples']} latency samples (< {MIN_SAMPLES})"
    if "rss_per_conn" in row and row["N"] < MIN_CONNECTIONS:
        return f"{row['N']} connections (< {MIN_CONNECTIONS})"
    return None


def check_meaningful(rows: list[dict[str, Any]]) -> None:
    notes = [f"{r['server']} {why}" for r in rows if (why := not_meaningful(r)) is not None]
    if notes:
        print(f"\nNOT MEANINGFUL: {'; '.join(notes)}: use a larger -n/-m/--seconds")


def check_complete(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("deliveries") != r.get("expected"):
            print(
                f"WARNING: {r['server']} delivered {r['deliveries']:,} of {r['expected']:,}",
                file=sys.stderr,
            )


# -- CLI --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        default="rtcore,naive,raw",
        help="servers to run, comma-separated (rtcore, rtcore-metrics, rtcore-history, naive, "
        "raw); rtcore-metrics is rtcore with its Prometheus metrics on, rtcore-history with "
        "channel history on every channel (history_size 1000)",
    )
    parser.add_argument("--procs", type=int, default=1, help="subscriber load processes")
    parser.add_argument("--runs", type=int, default=1, help="runs per server; the median is shown")
    parser.add_argument(
        "--flush-window", type=float, default=0.002, help="rtcore's flush batching window, seconds"
    )
    parser.add_argument(
        "--load",
        choices=["c", "python"],
        default="c",
        help="subscriber load generator: C (bench/csub.c, built with cc) or Python",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    b = sub.add_parser("burst", help="N subscribers, a burst of M messages")
    b.add_argument("-n", "--subscribers", type=int, default=1000)
    b.add_argument("-m", "--messages", type=int, default=2000)
    b.add_argument(
        "--baseline-messages",
        type=int,
        default=200,
        help="messages for the naive baseline (it is ~50x slower; rates compare)",
    )
    b.add_argument("--size", type=int, default=110, help="delivered frame size, bytes")
    s = sub.add_parser("steady", help="a steady publish rate; latency percentiles")
    s.add_argument("-n", "--subscribers", type=int, default=1000)
    s.add_argument("--rate", type=float, default=200.0, help="messages per second published")
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--size", type=int, default=110)
    c = sub.add_parser("connect", help="connection rate and RSS per idle connection")
    c.add_argument("--counts", default="1000,5000,10000")
    h = sub.add_parser("churn", help="joins/leaves per second into an N-member channel")
    h.add_argument("-n", "--members", type=int, default=1000)
    h.add_argument("--pairs", type=int, default=1000, help="join+leave pairs")
    h.add_argument("--baseline-pairs", type=int, default=100)
    j = sub.add_parser("joins", help="N clients connect and join one channel; presence modes")
    j.add_argument("-n", "--clients", type=int, default=10_000)
    j.add_argument(
        "--modes",
        default="events off,diffs",
        help=f"of: {', '.join(JOIN_MODES)}; each may end in '{PIPELINED}' (hello and join "
        "sent right behind the upgrade request)",
    )
    j.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: the server is `rtcore serve --workers N` over a private redis-server "
        "(SO_REUSEPORT; the kernel spreads the connections over the workers)",
    )
    j.add_argument(
        "--member-frames-n",
        type=int,
        default=2000,
        help="clients for the member_* mode (O(N^2) frames: 10,000 take minutes)",
    )
    st = sub.add_parser("storm", help="N clients; the server restarts; all reconnect and rejoin")
    st.add_argument("-n", "--clients", type=int, default=10_000)
    st.add_argument("--ips", type=int, default=40, help="loopback source addresses")
    layouts = (
        f"layouts to run, comma-separated, of: {', '.join(LAYOUTS)} (1 node with the memory "
        "broker, 1 or 2 nodes over a private redis-server)"
    )
    nb = sub.add_parser(
        "nodes-burst", help="rtcore nodes over Redis: a burst, subscribers split across nodes"
    )
    nb.add_argument("-n", "--subscribers", type=int, default=1000)
    nb.add_argument("-m", "--messages", type=int, default=2000)
    nb.add_argument("--size", type=int, default=110, help="delivered frame size, bytes")
    nb.add_argument("--layouts", default="memory,redis-2", help=layouts)
    ns = sub.add_parser(
        "nodes-steady", help="rtcore nodes over Redis: cross-node latency at a steady rate"
    )
    ns.add_argument("-n", "--subscribers", type=int, default=50)
    ns.add_argument("--rate", type=float, default=2000.0, help="messages per second published")
    ns.add_argument("--seconds", type=float, default=10.0)
    ns.add_argument("--size", type=int, default=110)
    ns.add_argument("--layouts", default="memory,redis-2", help=layouts)
    sub.add_parser("all", help="every scenario with its defaults")
    sub.add_parser("smoke", help="every scenario at tiny N (the test suite runs this)")
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    LOAD["c"] = args.load == "c" and build_csub()
    SERVER_ARGS[:] = ["--flush-window", str(args.flush_window)]
    PROCS["n"] = args.procs
    print(
        f"machine: {machine()}; load: {'C' if LOAD['c'] else 'Python'} subscribers, "
        f"{args.procs} process(es)\n"
    )
    if args.scenario in ("all", "smoke"):
        tiny = args.scenario == "smoke"
        if tiny:
            print("smoke: tiny sizes that check the harness runs; NOT MEANINGFUL as numbers\n")
        burst(servers, args, 20 if tiny else 1000, 50 if tiny else 2000, 110, 20 if tiny else 200)
        steady(
            servers, args, 20 if tiny else 1000, 50.0 if tiny else 200.0, 1.0 if tiny else 10.0, 110
        )
        connect([s for s in servers if s != "raw"], args, [250] if tiny else [1000, 5000, 10000])
        churn(
            [s for s in servers if s != "raw"],
            args,
            20 if tiny else 1000,
            20 if tiny else 1000,
            10 if tiny else 100,
        )
        modes = ["events off", *(["diffs", "member_*"] if LOAD["c"] else [])]
        joins(args, 100 if tiny else 10_000, modes, 100 if tiny else 2000)
        if LOAD["c"]:
            storm(args, 50 if tiny else 10_000, 5 if tiny else 40)
        if cluster.redis_binary() is None:
            print("\nnodes-burst, nodes-steady: SKIPPED (no redis-server on PATH)")
        elif not tiny or LOAD["c"]:  # its load side is burst's and steady's: smoked with C only
            two = ["memory", "redis-2"]
            nodes_burst(args, two, 20 if tiny else 1000, 50 if tiny else 2000, 110)
            nodes_steady(  # the memory layout's steady run is the steady scenario's
                args,
                two[1:] if tiny else two,
                10 if tiny else 50,
                50 if tiny else 2000.0,
                0.5 if tiny else 10.0,
                110,
            )
    elif args.scenario == "burst":
        burst(servers, args, args.subscribers, args.messages, args.size, args.baseline_messages)
    elif args.scenario == "steady":
        steady(servers, args, args.subscribers, args.rate, args.seconds, args.size)
    elif args.scenario == "connect":
        connect([s for s in servers if s != "raw"], args, [int(x) for x in args.counts.split(",")])
    elif args.scenario == "storm":
        storm(args, args.clients, args.ips)
    elif args.scenario == "joins":
        joins(args, args.clients, args.modes.split(","), args.member_frames_n)
    elif args.scenario in ("nodes-burst", "nodes-steady"):
        chosen = args.layouts.split(",")
        if unknown := [k for k in chosen if k not in LAYOUTS]:
            parser.error(f"--layouts: unknown {', '.join(unknown)} (of: {', '.join(LAYOUTS)})")
        if any(LAYOUTS[k][1] for k in chosen) and cluster.redis_binary() is None:
            parser.error(
                "the Redis layouts need redis-server on PATH (apt-get install redis-server)"
            )
        if args.flush_window != 0.002:
            print("note: nodes run `rtcore serve` with its flush window (0.002 s)\n")
        if args.scenario == "nodes-burst":
            nodes_burst(args, chosen, args.subscribers, args.messages, args.size)
        else:
            nodes_steady(args, chosen, args.subscribers, args.rate, args.seconds, args.size)
    elif args.scenario == "churn":
        churn(
            [s for s in servers if s != "raw"], args, args.members, args.pairs, args.baseline_pairs
        )
    return 0


def burst(servers: list[str], args: Any, n: int, m: int, size: int, m_base: int) -> None:
    rows = interleaved_runs(
        args.runs,
        servers,
        lambda k: run_burst(k, n, m_base if k == "naive" else m, size, args.procs),
        scenario="burst",
    )
    report(
        f"## burst: {n} subscribers in one channel, ~{size}-byte messages\n",
        rows,
        [
            ("server", "server", ""),
            ("M", "messages", "d"),
            ("deliveries", "deliveries", ",d"),
            ("seconds", "s", ".3f"),
            ("rate", "deliveries/s", ",.0f"),
            ("cpu", "server CPU", ".0%"),
            ("rss_mb", "server RSS MB", ".0f"),
        ],
    )


def steady(servers: list[str], args: Any, n: int, rate: float, seconds: float, size: int) -> None:
    rows = [  # at a fixed offered rate, the median run is the one with the median p99
        median_run(args.runs, run_steady, k, n, rate, seconds, size, args.procs, key="p99")
        for k in servers
    ]
    report(
        f"\n## steady: {n} subscribers, {rate:g} msgs/s for {seconds:g} s "
        f"(offered {n * rate:,.0f} deliveries/s), ~{size}-byte messages\n",
        rows,
        [
            ("server", "server", ""),
            ("deliveries", "deliveries", ",d"),
            ("rate", "deliveries/s", ",.0f"),
            ("p50", "p50 ms", ".2f"),
            ("p99", "p99 ms", ".2f"),
            ("p999", "p99.9 ms", ".2f"),
            ("samples", "samples", "d"),
            ("cpu", "server CPU", ".0%"),
        ],
    )


def connect(servers: list[str], args: Any, counts: list[int]) -> None:
    rows = []
    for n in counts:
        procs = max(args.procs, math.ceil(n / 5000))
        for k in servers:
            progress(f"connect {k}, {n:,} connections ...")
            rows.append(run_connect(k, n, procs))
    print("\n## connect: connections opened (upgrade + hello), RSS per idle connection\n")
    print(
        table(
            rows,
            [
                ("server", "server", ""),
                ("N", "connections", ",d"),
                ("rate", "connections/s", ",.0f"),
                ("rss_per_conn", "RSS/conn bytes", ",.0f"),
                ("rss_mb", "server RSS MB", ".0f"),
            ],
            baseline="",
        )
    )
    check_meaningful(rows)


def storm(args: Any, n: int, ips: int) -> None:
    if not build_csub("cstorm"):
        raise SystemExit("the storm scenario needs a C compiler (bench/cstorm.c)")
    row = median_run(args.runs, run_storm, n, ips, key="seconds")
    print(f"\n## storm: {n:,} clients from {ips} IPs, the server killed and restarted\n")
    print(
        table(
            [row],
            [
                ("N", "clients", ",d"),
                ("setup", "first setup, s", ".2f"),
                ("seconds", "restart to all rejoined, s", ".2f"),
                ("refusals", "refusals by close code / HTTP status / tcp", ""),
            ],
            baseline="",
        )
    )
    _runs_note([row])


def joins(args: Any, n: int, modes: list[str], member_frames_n: int) -> None:
    rows = []
    for mode in modes:
        size = member_frames_n if mode == "member_*" else n
        procs = max(args.procs, math.ceil(size / 5000))
        rows.append(
            median_run(
                args.runs, run_joins, mode, size, procs, getattr(args, "workers", 1), key="seconds"
            )
        )
    print("\n## joins: N clients connect (upgrade + hello) and join one channel\n")
    print(
        table(
            rows,
            [
                ("server", "presence", ""),
                ("N", "clients", ",d"),
                ("seconds", "first connect to last join ok, s", ".2f"),
                ("rate", "joins/s", ",.0f"),
                ("cpu_s", "server CPU s", ".1f"),
            ],
            baseline="",
        )
    )
    _runs_note(rows)


def churn(servers: list[str], args: Any, n: int, pairs: int, pairs_base: int) -> None:
    rows = [
        median_run(args.runs, run_churn, k, n, pairs_base if k == "naive" else pairs, args.procs)
        for k in servers
    ]
    report(
        f"\n## presence churn: join+leave pairs into a {n}-member channel\n",
        rows,
        [
            ("server", "server", ""),
            ("pairs", "pairs", "d"),
            ("joins", "joins/s", ",.0f"),
            ("rate", "presence deliveries/s", ",.0f"),
            ("cpu", "server CPU", ".0%"),
        ],
    )


def report(
    title: str,
    rows: list[dict[str, Any]],
    cols: list[tuple[str, str, str]],
    baseline: str = "naive",
) -> None:
    """Check the counts, print the section's table and every run's value."""
    check_complete(rows)
    print(title)
    print(table(rows, cols, baseline))
    _runs_note(rows)
    _metrics_ratio(rows)
    check_meaningful(rows)


def _metrics_ratio(rows: list[dict[str, Any]]) -> None:
    """With and without metrics (or channel history) in the same run: the ratio of their
    medians."""
    by = {r["server"]: r for r in rows}
    for variant in ("rtcore-metrics", "rtcore-history"):
        if "rtcore" not in by or variant not in by:
            continue
        on, off = by[variant], by["rtcore"]
        print(f"\n{variant} / rtcore: {on['rate'] / off['rate']:.3f} (median rates)")
        if off.get("cpu_seconds_median", 0) > 0 and "cpu_seconds_median" in on:
            print(
                f"server CPU seconds (median): rtcore {off['cpu_seconds_median']:.3f}, "
                f"{variant} {on['cpu_seconds_median']:.3f}: "
                f"{on['cpu_seconds_median'] / off['cpu_seconds_median']:.3f}x"
            )


def _runs_note(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "runs" in r:
            print(f"\n{r['server']}: runs {r['runs']} (median shown)")


if __name__ == "__main__":
    sys.exit(main())
