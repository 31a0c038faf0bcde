"""Two rtcore nodes over Redis behind a load balancer, under faults, while history traffic
flows (issue 24): the harness of tests/integration/test_chaos_nodes.py (short) and of
bench/scenarios/chaos_soak.py (the long run).

Each node is ``rtcore serve`` in its own process, on fixed ports (a restarted node comes back
where the balancer expects it); the balancer is tests/integration/proxy.py's ``Proxy`` with
two targets. Subscribers and publishers are the project's Python client through the balancer,
on a history channel; presence clients join a channel without history. Faults come in turn,
every ``period`` seconds: Redis stalled (SIGSTOP), Redis killed (SIGKILL) and restarted, a
node killed and restarted, a node drained (SIGTERM) and restarted.

What is checked, for every subscriber (:func:`verdict`): no refused send was delivered; no
message twice; a stream's offsets in order; every acknowledged message received, or the
subscriber told it was not recovered (a ``Recovered`` event that did not recover, after the
last message it had of that stream before the missing one). At the end: every client is
connected and receives a last message (none stuck), and both nodes list exactly the
presence clients that are connected (member lists exact).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from rtcore.client import Client, Msg, Recovered, RequestError
from rtcore.client.errors import ClientError
from tests.integration.proxy import Proxy
from tests.integration.redisd import free_port

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ("stall_redis", "kill_redis", "kill_node", "drain_node")


SECRET = "chaos-" + "s" * 32


def node_toml(port: int, api_port: int, redis_port: int) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
api_host = "127.0.0.1"
api_port = {api_port}

[limits]
shutdown_grace = 2.0
max_connections_per_ip = 100000
connect_rate_per_ip = 1e9
connect_burst_per_ip = 100000

[broker]
kind = "redis"
url = "redis://127.0.0.1:{redis_port}/0"
command_timeout = 1.0
connect_timeout = 1.0
presence_ttl = 4.0
presence_refresh = 1.0

[[apps]]
name = "default"
server_secret = "{SECRET}"

[[apps.channels]]
pattern = "feed"
history_size = 100000
history_ttl = 3600.0
"""


class RedisProc:
    """redis-server on a fixed port: without persistence, or with AOF (fsync every second)."""

    def __init__(self, aof: bool, workdir: str) -> None:
        self.port, self.aof, self.workdir = free_port(), aof, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--protected-mode", "no",
             *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class NodeProc:
    """``rtcore serve --config`` in its own process, on ports kept across restarts."""

    def __init__(self, redis_port: int, workdir: str, name: str) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.config = Path(workdir) / f"{name}.toml"
        self.config.write_text(node_toml(self.port, self.api_port, redis_port))
        self.log = Path(workdir) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from rtcore.cli import main; sys.exit(main())",
                 "serve", "--config", str(self.config), "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
            )  # fmt: skip

    async def ready(self, http: httpx.AsyncClient) -> bool:
        try:
            reply = await http.get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    async def stop(self, sig: signal.Signals) -> None:
        """SIGKILL (a crash) or SIGTERM (a drain: waits for the node to exit)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(sig)
            while proc.poll() is None:  # noqa: ASYNC110 (a child process; caller's deadline)
                await trio.sleep(0.05)

    def rss(self) -> int:
        if self.proc is None:
            return 0
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


@attrs.define
class Subscriber:
    client: Client
    timeline: list[tuple[Any, ...]] = attrs.Factory(list)
    """("msg", epoch, offset, key) and ("lost", reason) / ("recovered",), in arrival order."""

    def attach(self) -> None:
        self.client.on("*", self._msg)
        self.client.on_recover(self._recovered)
        self.client.on_gap(lambda gap: self.timeline.append(("lost", "gap")))

    def _msg(self, msg: Msg) -> None:
        data = msg.data
        key = (data["p"], data["n"]) if isinstance(data, dict) else ("final", 0)
        self.timeline.append(("msg", msg.epoch, msg.offset, key))

    def _recovered(self, event: Recovered) -> None:
        self.timeline.append(("recovered",) if event.recovered else ("lost", event.reason))


@attrs.define
class Outcomes:
    acked: dict[tuple[int, int], tuple[str, int]] = attrs.Factory(dict)
    refused: set[tuple[int, int]] = attrs.Factory(set)
    unknown: set[tuple[int, int]] = attrs.Factory(set)
    why: Counter[str] = attrs.Factory(Counter)
    """The sends not acknowledged, by error code (or exception name)."""


@attrs.define
class Verdict:
    refused_delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    missed_with_signal: int = 0
    missed_silently: int = 0
    lost_after_recovered: int = 0

    def add(self, other: Verdict) -> None:
        for field in attrs.fields(Verdict):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def verdict(timeline: list[tuple[Any, ...]], outcomes: Outcomes) -> Verdict:
    """One subscriber's timeline against what the publishers were told (module doc)."""
    found = Verdict()
    msgs = [(i, e) for i, e in enumerate(timeline) if e[0] == "msg" and e[3][0] != "final"]
    counts = Counter(e[3] for _, e in msgs)
    found.duplicates = sum(n - 1 for n in counts.values())
    found.refused_delivered = sum(1 for key in counts if key in outcomes.refused)
    last: dict[str, int] = {}
    for _, (_, epoch, offset, _) in msgs:
        if offset is None:  # a history message with no place in the stream
            found.out_of_order += 1
            continue
        found.out_of_order += offset <= last.get(epoch, 0)
        last[epoch] = max(offset, last.get(epoch, 0))
    for key, (epoch, offset) in outcomes.acked.items():
        if key in counts:
            continue
        before = [i for i, e in msgs if e[1] == epoch and e[2] is not None and e[2] < offset]
        since = before[-1] if before else -1
        later = [e for e in timeline[since + 1 :] if e[0] in ("lost", "recovered")]
        if any(e[0] == "lost" for e in later):
            found.missed_with_signal += 1
        else:
            found.missed_silently += 1
            found.lost_after_recovered += any(e[0] == "recovered" for e in later)
    return found


async def publisher(client: Client, number: int, outcomes: Outcomes, stop: trio.Event) -> None:
    """Sends numbered messages until ``stop``, recording what each send was told."""
    n = 0
    while not stop.is_set():
        n += 1
        key = (number, n)
        try:
            ok = await client.send("feed", "tick", {"p": number, "n": n})
        except RequestError as exc:
            (outcomes.refused if exc.retry_safe else outcomes.unknown).add(key)
            outcomes.why[exc.code] += 1
        except ClientError as exc:  # no reply (timeout, connection lost): outcome unknown
            outcomes.unknown.add(key)
            outcomes.why[type(exc).__name__] += 1
        else:
            outcomes.acked[key] = (ok["epoch"], ok["offset"])
        await trio.sleep(0.03)


@attrs.define
class Report:
    """The figures of a run (what issue 24's "Done when" names)."""

    mode: str
    seconds: float
    faults: list[str]
    acked: int
    refused: int
    unknown: int
    why: dict[str, int]
    verdict: Verdict
    recovered_rejoins: int
    stuck: int
    members_exact: bool
    rss_mb: list[float]

    def lines(self) -> list[str]:
        v = self.verdict
        return [
            f"redis: {self.mode}; {self.seconds:.0f} s; faults: {', '.join(self.faults)}",
            f"sends: {self.acked} acknowledged, {self.refused} refused, {self.unknown} unknown"
            f" ({', '.join(f'{k}: {n}' for k, n in sorted(self.why.items()))})",
            f"deliveries of refused sends: {v.refused_delivered}",
            f"messages missed without a signal: {v.missed_silently}"
            f" (with a signal: {v.missed_with_signal})",
            f"duplicates: {v.duplicates}; out of order: {v.out_of_order}",
            f"rejoins that said recovered: true: {self.recovered_rejoins};"
            f" losses after them: {v.lost_after_recovered}",
            f"clients stuck: {self.stuck}",
            f"member lists exact on both nodes: {self.members_exact}",
            f"node RSS (MB, at the end): {', '.join(f'{r:.0f}' for r in self.rss_mb)}",
        ]

    def clean(self) -> bool:
        v = self.verdict
        return not (
            v.refused_delivered or v.missed_silently or v.duplicates or v.out_of_order
        ) and (self.stuck == 0 and self.members_exact)


@attrs.define
class Cluster:
    redis: RedisProc
    nodes: list[NodeProc]
    http: httpx.AsyncClient = attrs.field(
        factory=lambda: httpx.AsyncClient(headers={"authorization": f"Bearer {SECRET}"})
    )

    async def up(self) -> None:
        """Wait until both nodes are ready (connected to Redis); bounded by the caller."""
        while not all([await n.ready(self.http) for n in self.nodes]):  # noqa: ASYNC110
            await trio.sleep(0.1)  # (other processes; bounded by the caller's deadline)

    async def fault(self, kind: str, stall: float, number: int) -> None:
        """One fault, then the system back whole (``up``)."""
        node = self.nodes[number % 2]
        if kind == "stall_redis":
            self.redis.signal(signal.SIGSTOP)
            await trio.sleep(stall)
            self.redis.signal(signal.SIGCONT)
        elif kind == "kill_redis":
            self.redis.kill()
            await trio.sleep(1.0)
            self.redis.start()
        else:  # a node: killed (a crash) or drained (SIGTERM), then started again
            await node.stop(signal.SIGKILL if kind == "kill_node" else signal.SIGTERM)
            await trio.sleep(0.5)
            node.start()
        await self.up()


async def open_clients(url: str, count: int, channel: str, nursery: trio.Nursery) -> list[Client]:
    clients = []
    for _ in range(count):
        client = Client(url, request_timeout=40.0, backoff_initial=0.2, backoff_max=2.0)
        await client.open(nursery)
        await client.join(channel)
        clients.append(client)
    return clients


async def final_round(pubs: list[Client], subs: list[Subscriber]) -> int:
    """A last message, sent until accepted; the subscribers that do not get it are stuck."""
    for _ in range(100):
        try:
            await pubs[0].send("feed", "final", "final")
            break
        except ClientError:
            await trio.sleep(0.2)
    for _ in range(200):  # up to 20 s for every subscriber to have it
        missing = [s for s in subs if not any(e[-1] == ("final", 0) for e in s.timeline[-50:])]
        if not missing:
            return 0
        await trio.sleep(0.1)
    return len(missing) + sum(not c.is_connected() for c in pubs)


async def members_exact(cluster: Cluster, watchers: list[Client]) -> bool:
    """Both nodes list exactly the presence clients' current connections (converging for up
    to presence_ttl + presence_refresh and some)."""
    expected = {c.id for c in watchers}
    for _ in range(100):
        listed = []
        for node in cluster.nodes:
            url = f"http://127.0.0.1:{node.api_port}/v1/apps/default/channels/room/members"
            reply = await cluster.http.get(url)
            listed.append({m["id"] for m in reply.json()["members"]} if reply.is_success else None)
        if all(found == expected for found in listed):
            return True
        await trio.sleep(0.1)
    return False


@attrs.define
class Load:
    """How much: clients and the fault cadence."""

    duration: float = 0.0
    """Seconds of faults, at least (and at least one round of the four)."""
    period: float = 6.0
    stall: float = 3.0
    subscribers: int = 8
    publishers: int = 3
    watchers: int = 4
    aof: bool = False


async def run_chaos(load: Load) -> Report:
    """Start Redis and two nodes, the balancer and the clients; fault in turn for
    ``duration`` seconds while the publishers send; then check (the module doc)."""
    with tempfile.TemporaryDirectory(prefix="rtcore-chaos-") as workdir:
        redis = RedisProc(load.aof, workdir)
        cluster = Cluster(redis, [NodeProc(redis.port, workdir, n) for n in ("a", "b")])
        redis.start()
        for node in cluster.nodes:
            node.start()
        try:
            return await _run(cluster, load)
        finally:
            for node in cluster.nodes:
                if node.proc is not None:
                    node.proc.kill()
                    node.proc.wait()
            redis.kill()
            await cluster.http.aclose()


async def _run(cluster: Cluster, load: Load) -> Report:
    start = trio.current_time()
    with trio.fail_after(120):
        await cluster.up()
    proxy = Proxy(*[("127.0.0.1", n.port) for n in cluster.nodes])
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        url, outcomes, stop = proxy.url(), Outcomes(), trio.Event()
        subs = [Subscriber(c) for c in await open_clients(url, load.subscribers, "feed", nursery)]
        for sub in subs:
            sub.attach()
        pubs = await open_clients(url, load.publishers, "feed", nursery)
        watchers = await open_clients(url, load.watchers, "room", nursery)
        for number, pub in enumerate(pubs):
            nursery.start_soon(publisher, pub, number, outcomes, stop)
        faults = await _faults(cluster, load)
        stop.set()
        with trio.fail_after(120):
            report = await _report(cluster, load, outcomes, subs, pubs, watchers, faults)
        report.seconds = trio.current_time() - start
        for client in [*pubs, *watchers, *(s.client for s in subs)]:
            await client.aclose()
        nursery.cancel_scope.cancel()
    return report


async def _faults(cluster: Cluster, load: Load) -> list[str]:
    done: list[str] = []
    deadline = trio.current_time() + load.duration
    while trio.current_time() < deadline or len(done) < len(FAULTS):
        await trio.sleep(load.period / 2)
        kind = FAULTS[len(done) % len(FAULTS)]
        with trio.fail_after(120):
            await cluster.fault(kind, load.stall, len(done))
        done.append(kind)
        await trio.sleep(load.period / 2)
    return done


async def _report(
    cluster: Cluster,
    load: Load,
    outcomes: Outcomes,
    subs: list[Subscriber],
    pubs: list[Client],
    watchers: list[Client],
    faults: list[str],
) -> Report:
    await trio.sleep(1.0)  # the last sends' answers
    stuck = await final_round(pubs, subs)
    exact = await members_exact(cluster, watchers)
    total = Verdict()
    for sub in subs:
        total.add(verdict(sub.timeline, outcomes))
    rejoins = sum(e[0] == "recovered" for s in subs for e in s.timeline)
    return Report(
        "AOF" if load.aof else "no persistence",
        0.0,
        faults,
        len(outcomes.acked),
        len(outcomes.refused),
        len(outcomes.unknown),
        dict(outcomes.why),
        total,
        rejoins,
        stuck,
        exact,
        [n.rss() / 1e6 for n in cluster.nodes],
    )
