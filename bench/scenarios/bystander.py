"""bystander: does a quiet client wait for other clients' cheap, costly traffic? (issue 20)

One ``rtcore serve`` process with its defaults (the presence budget on), a history channel
rule and ``max_history_bytes`` of 8 MiB. A *bystander* is in ``lobby`` (taking ``member_*``
frames) and ``pings``; a *pinger* sends it a small message every ``--interval`` seconds on
``pings``, stamped with the load process's monotonic clock, and the bystander's latency is
its arrival time minus that stamp. Two phases, in one invocation:

* **quiet**: the bystander and the pinger alone (the baseline);
* **attacked**: meanwhile, in a separate process, ``--senders`` connections send the
  costliest message the server accepts (1,024 arrays -- the most a message may hold -- and
  small integers up to ``max_message_bytes``) to their own history channels, one after the
  other's ``ok``, and ``--churners`` connections join and leave ``lobby`` and update 4 KiB
  profiles as fast as the server admits (waiting ``retry_after`` when refused).

The table shows the bystander's latency (p50, p99, max) in each phase, the ratio, the
closes it suffered (4008 would mean others' traffic made it a slow consumer), what the load
got done, and the server's CPU.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgpack
import trio

from bench import cluster
from bench.scenarios import Subparsers
from bench.tables import table
from rtcore.loadtest import wire

MAX_MESSAGE = 64 * 1024
PROFILE = {"name": "x" * 4000}
"""A 4 KiB profile (``max_profile_bytes`` is 4096)."""


def costliest_data(max_message: int = MAX_MESSAGE) -> list[Any]:
    """The costliest ``data`` accepted: the most arrays a value may hold, then one-byte
    integers up to the message size (room left for the frame's other fields)."""
    return [[] for _ in range(1023)] + [7] * (max_message - 1023 - 200)


class Conn:
    """A raw rtcore connection: upgrade, hello, then msgpack frames both ways."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.rest = b""
        self.frames: list[tuple[int, bytes]] = []
        self.closed: int | None = None

    @classmethod
    async def open(cls, port: int, **hello: Any) -> Conn:
        conn = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await conn.stream.send_all(wire.UPGRADE)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await conn.stream.receive_some(65536)
        conn.rest = head.split(b"\r\n\r\n", 1)[1]
        await conn.send(t="hello", v=1, **hello)
        welcome = await conn.recv()
        assert welcome is not None and welcome["t"] == "welcome", welcome
        return conn

    async def send(self, **obj: Any) -> None:
        await self.stream.send_all(wire.request(**obj))

    async def recv(self) -> dict[str, Any] | None:
        """The next frame's map; None once the server closed (``closed`` has its code)."""
        while not self.frames:
            if self.closed is not None:
                return None
            self._split()
            if not self.frames:
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    self.closed = self.closed or 1006
                    return None
                self.rest += data
        opcode, payload = self.frames.pop(0)
        if opcode == 0x8:
            self.closed = int.from_bytes(payload[:2], "big") if payload else 1005
            return None
        return msgpack.unpackb(payload, strict_map_key=False)  # type: ignore[no-any-return]

    def _split(self) -> None:
        data, p = self.rest, 0
        while p + 2 <= len(data):
            size, start = data[p + 1] & 0x7F, p + 2
            if size == 126:
                size, start = int.from_bytes(data[p + 2 : p + 4], "big"), p + 4
            elif size == 127:
                size, start = int.from_bytes(data[p + 2 : p + 10], "big"), p + 10
            if start + size > len(data):
                break
            self.frames.append((data[p] & 0x0F, data[start : start + size]))
            p = start + size
        self.rest = data[p:]

    async def reply(self, rid: int) -> dict[str, Any] | None:
        """Frames until the reply to ``rid`` (others are dropped)."""
        while (frame := await self.recv()) is not None:
            if frame.get("id") == rid and frame["t"] in ("ok", "err"):
                return frame
        return None


# -- the load (a separate process) -------------------------------------------------------------


async def _sender(port: int, i: int, until: float, done: list[int]) -> None:
    conn = await Conn.open(port)
    channel = f"attack-{i}"
    await conn.send(t="join", id=1, ch=channel)
    await conn.reply(1)
    payload = wire.request(t="send", id=2, ch=channel, ev="e", data=costliest_data(), echo=False)
    while time.monotonic() < until:
        await conn.stream.send_all(payload)
        answer = await conn.reply(2)
        if answer is None or answer["t"] != "ok":  # (a refusal would make the run meaningless)
            print(f"sender {i}: {answer}", file=sys.stderr)
            return
        done[0] += 1


async def _churner(port: int, until: float, done: list[int]) -> None:
    conn = await Conn.open(port, profile=PROFILE)
    rid = 0
    while time.monotonic() < until:
        for request in ({"t": "join", "ch": "lobby"}, {"t": "profile", "data": PROFILE}):
            rid += 1
            await conn.send(id=rid, **request)
            answer = await conn.reply(rid)
            if answer is None:
                return
            if answer["t"] == "err":
                await trio.sleep(answer.get("retry_after", 100) / 1000)
            else:
                done[1] += 1
        rid += 1
        await conn.send(t="leave", id=rid, ch="lobby")
        if (await conn.reply(rid)) is None:
            return
        done[1] += 1


async def attack(port: int, seconds: float, senders: int, churners: int) -> list[int]:
    """Run the senders and churners for ``seconds``; returns [messages, presence ops]."""
    done = [0, 0]
    until = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        for i in range(senders):
            nursery.start_soon(_sender, port, i, until, done)
        for _ in range(churners):
            nursery.start_soon(_churner, port, until, done)
    return done


# -- the bystander (this process) ---------------------------------------------------------------


async def _pinger(port: int, until: float, interval: float) -> None:
    conn = await Conn.open(port)
    await conn.send(t="join", id=1, ch="pings")
    await conn.reply(1)
    rid = 1
    while time.monotonic() < until:
        rid += 1
        await conn.send(t="send", id=rid, ch="pings", ev="ping", data=time.monotonic(), echo=False)
        await trio.sleep(interval)
    await conn.stream.aclose()


async def watch(port: int, seconds: float, interval: float) -> dict[str, Any]:
    """The bystander's latencies (ms) over ``seconds`` of pings, and its close code."""
    bystander = await Conn.open(port)
    for rid, channel in enumerate(("lobby", "pings"), 1):
        await bystander.send(t="join", id=rid, ch=channel)
        await bystander.reply(rid)
    latencies: list[float] = []
    presence = 0
    until = time.monotonic() + seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pinger, port, until, interval)
        with trio.move_on_after(seconds + 2):
            while (frame := await bystander.recv()) is not None:
                if frame["t"] == "msg" and frame["ev"] == "ping":
                    latencies.append((time.monotonic() - frame["data"]) * 1000)
                    if len(latencies) >= seconds / interval - 1:
                        break
                elif frame["t"].startswith("member_"):
                    presence += 1
    await bystander.stream.aclose()
    return {"latencies": latencies, "presence": presence, "closed": bystander.closed}


def server_toml(port: int, api_port: int) -> str:
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\napi_port = {api_port}\n\n'
        "[limits]\nheartbeat_interval = 600.0\nmax_history_bytes = 8388608\n"
        "connect_rate_per_ip = 1e6\nconnect_burst_per_ip = 100000\n\n"
        '[[apps]]\nname = "default"\n\n'
        '[[apps.channels]]\npattern = "attack-*"\nhistory_size = 1000\nhistory_ttl = 600\n'
    )


def _row(phase: str, seen: dict[str, Any], cpu: float, seconds: float) -> dict[str, Any]:
    lat = sorted(seen["latencies"]) or [float("nan")]
    return {
        "phase": phase,
        "pings": len(seen["latencies"]),
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max": lat[-1],
        "closed": "none" if seen["closed"] is None else str(seen["closed"]),
        "presence": seen["presence"],
        "cpu": cpu / seconds,
    }


def run(seconds: float, senders: int, churners: int, interval: float) -> list[dict[str, Any]]:
    port, api_port = cluster.free_port(), cluster.free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(server_toml(port, api_port))
    server = subprocess.Popen(
        [sys.executable, "-m", "rtcore.cli", "serve", "--config", config.name,
         "--log-level", "WARNING"]
    )  # fmt: skip
    try:
        _await_ready(server, port)
        rows = []
        for phase in ("quiet", "attacked"):
            load = None
            if phase == "attacked":
                load = subprocess.Popen(
                    [sys.executable, "-m", "bench.scenarios.bystander", "--attack", str(port),
                     str(seconds + 1), str(senders), str(churners)],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                time.sleep(min(1.0, seconds / 4))  # the attack under way first
            cpu0 = cluster.cpu_seconds(server.pid)
            seen = trio.run(watch, port, seconds, interval)
            row = _row(phase, seen, cluster.cpu_seconds(server.pid) - cpu0, seconds)
            if load is not None:
                out, _ = load.communicate(timeout=seconds + 60)
                messages, ops = map(int, out.split())
                row["load"] = f"{messages} sends, {ops} presence ops"
            else:
                row["load"] = "none"
            rows.append(row)
        return rows
    finally:
        server.kill()
        server.wait()


def _await_ready(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + cluster.STARTUP_SECONDS
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the rtcore server did not start") from None
            time.sleep(0.05)


def add_parser(sub: Subparsers) -> None:
    h = sub.add_parser("bystander", help="a quiet client's latency under costly traffic")
    h.add_argument("--seconds", type=float, default=15.0, help="each phase's length")
    h.add_argument("--senders", type=int, default=4)
    h.add_argument("--churners", type=int, default=16)
    h.add_argument("--interval", type=float, default=0.01, help="seconds between pings")


def command(parser: argparse.ArgumentParser, args: argparse.Namespace, servers: list[str]) -> None:
    rows = run(args.seconds, args.senders, args.churners, args.interval)
    quiet = rows[0]
    for row in rows:
        row["ratio"] = row["p99"] / quiet["p99"] if quiet["p99"] else float("nan")
    for row in rows:
        row["server"] = "rtcore"
    print(
        f"\n## bystander: {args.senders} senders of the costliest message, "
        f"{args.churners} presence churners, {args.seconds:g} s per phase\n"
    )
    cols = [
        ("phase", "phase", ""),
        ("pings", "pings", "d"),
        ("p50", "p50 ms", ".2f"),
        ("p99", "p99 ms", ".2f"),
        ("max", "max ms", ".2f"),
        ("ratio", "p99 / quiet", ".1f"),
        ("closed", "bystander closed", ""),
        ("presence", "member_* frames", "d"),
        ("load", "load done", ""),
        ("cpu", "server CPU", ".0%"),
    ]
    print(table(rows, cols))


if __name__ == "__main__" and sys.argv[1:2] == ["--attack"]:
    port_, seconds_, senders_, churners_ = sys.argv[2:6]
    done_ = trio.run(attack, int(port_), float(seconds_), int(senders_), int(churners_))
    print(*done_)
