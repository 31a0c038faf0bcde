"""Hooks and webhooks under load: ``python -m bench.hooks --help``.

Three processes: a local HTTP backend (h11 on trio, answering every hook "allow" and every
webhook batch 204), an rtcore server with two apps -- ``plain`` (no hooks) and ``hooked``
(``join = "hook"``, ``send = "hook"`` on every channel, every webhook event) -- and this
load process. It measures, per app, the round trip of ``--joins`` joins (each a new
channel, ``--conns`` connections in turn) and of ``--sends`` sends: p50 and p99, and the
server's CPU seconds per operation (from /proc: Linux). Then the webhook events the joins
and sends caused are counted as the backend receives them: events per second delivered.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h11
import msgpack
import trio

from rtcore.loadtest.wire import UPGRADE, frames, request

SECRET = "bench-hooks-secret-" + "x" * 20
COLUMNS = (
    "join p50 ms",
    "join p99 ms",
    "server CPU us/join",
    "send p50 ms",
    "send p99 ms",
    "server CPU us/send",
)


# -- the backend ----------------------------------------------------------------------------------


async def backend(port: int) -> None:
    """Allow every hook; count webhook events (GET /count answers the count)."""
    counted = {"events": 0, "first": 0.0, "last": 0.0}

    async def connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                target, body = event.target, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                answer = _answer(target, body, counted)
                headers = [("content-length", str(len(answer)))]
                out = conn.send(h11.Response(status_code=200, headers=headers))
                out += (conn.send(h11.Data(data=answer)) or b"") + (
                    conn.send(h11.EndOfMessage()) or b""
                )
                await stream.send_all(out)
                conn.start_next_cycle()
            else:
                return

    await trio.serve_tcp(connection, port, host="127.0.0.1")


def _answer(target: bytes, body: bytes, counted: dict[str, Any]) -> bytes:
    if target == b"/events":
        counted["events"] += body.count(b'"name"')
        counted["first"] = counted["first"] or time.monotonic()
        counted["last"] = time.monotonic()
        return b"{}"
    if target == b"/count":
        return msgpack.packb(counted)
    return b'{"allow": true}'


# -- the server -----------------------------------------------------------------------------------


def serve(port: int, backend_url: str) -> None:
    import rtcore
    from rtcore.config import AppConfig, ChannelRule
    from rtcore.config.hook_settings import HooksConfig, WebhookConfig

    hooks = HooksConfig(SECRET, join_url=f"{backend_url}/join", publish_url=f"{backend_url}/p")
    hooked = AppConfig(
        "hooked",
        channels=(ChannelRule("*", join="hook", send="hook"),),
        hooks=hooks,
        webhooks=(WebhookConfig(f"{backend_url}/events", SECRET, channels=("*",)),),
    )
    config = rtcore.Config(port=port, api_port=None, apps=(AppConfig("plain"), hooked))
    trio.run(rtcore.Server(config).serve)


# -- the load -------------------------------------------------------------------------------------


class Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.rest, self.next_id = stream, b"", 0
        self.read: list[dict[str, Any]] = []
        self.read: list[dict[str, Any]] = []

    async def ask(self, **frame: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        await self.stream.send_all(request(id=rid, **frame))
        return await self.reply(rid)

    async def reply(self, rid: int | None) -> dict[str, Any]:
        while True:
            payloads, self.rest = frames(self.rest)
            self.read += [msgpack.unpackb(p) for p in payloads]
            while self.read:
                msg = self.read.pop(0)
                if msg.get("t") in ("ok", "err", "welcome") and msg.get("id") == rid:
                    return dict(msg)
            self.rest += await self.stream.receive_some(65536)


async def connect(port: int, app: str) -> Conn:
    for _ in range(300):  # the server may still be starting: 30 s at most
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            break
        except OSError:
            await trio.sleep(0.1)
    else:
        raise SystemExit(f"no server on port {port}")
    await stream.send_all(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    conn = Conn(stream)
    conn.rest = head.split(b"\r\n\r\n", 1)[1]
    await stream.send_all(request(t="hello", v=1, app=app))
    await conn.reply(None)
    return conn


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


async def phase(port: int, pid: int, app: str, args: argparse.Namespace) -> dict[str, Any]:
    """Joins of new channels, then sends (each connection to its own channel), timed."""
    conns = [await connect(port, app) for _ in range(args.conns)]
    for k, conn in enumerate(conns):  # the channels the sends go to (not timed)
        assert (await conn.ask(t="join", ch=f"s{k}"))["t"] == "ok"
    result: dict[str, Any] = {"app": app}
    for op, count in (("join", args.joins), ("send", args.sends)):
        times = []
        before = cpu(pid)
        for i in range(count):
            k = i % len(conns)
            if op == "join":
                frame: dict[str, Any] = {"t": "join", "ch": f"c{i}"}
            else:
                frame = {"t": "send", "ch": f"s{k}", "ev": "e", "data": i}
            started = time.perf_counter()
            reply = await conns[k].ask(**frame)
            times.append(time.perf_counter() - started)
            assert reply["t"] == "ok", reply
        result[op] = summary(times, cpu(pid) - before)
    for conn in conns:
        await conn.stream.aclose()
    return result


def summary(times: list[float], cpu_seconds: float) -> tuple[float, float, float]:
    """p50 and p99 in milliseconds, server CPU microseconds per operation."""
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times) * 1000, p99 * 1000, cpu_seconds / len(times) * 1e6


async def webhook_rate(backend_port: int, expected: int, wait: float) -> tuple[int, float]:
    deadline = time.monotonic() + wait  # the events may still be coming in: poll
    counted: dict[str, Any] = {"events": 0, "first": 0.0, "last": 0.0}
    while time.monotonic() < deadline:
        stream = await trio.open_tcp_stream("127.0.0.1", backend_port)
        await stream.send_all(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
            data += await stream.receive_some(65536)
        await stream.aclose()
        counted = msgpack.unpackb(data.split(b"\r\n\r\n", 1)[1])
        if counted["events"] >= expected:
            break
        await trio.sleep(0.2)
    span = max(counted["last"] - counted["first"], 1e-9)
    return counted["events"], counted["events"] / span


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__)
    parser.add_argument("--joins", type=int, default=5000)
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--role", choices=["load", "backend", "server"], default="load")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend-url", default="")
    args = parser.parse_args(argv)
    if args.role == "backend":
        trio.run(backend, args.port)
        return 0
    if args.role == "server":
        serve(args.port, args.backend_url)
        return 0
    return run_load(args)


def run_load(args: argparse.Namespace) -> int:
    bport, sport = free_port(), free_port()
    me = [sys.executable, "-m", "bench.hooks"]
    procs = [
        subprocess.Popen([*me, "--role", "backend", "--port", str(bport)]),
        subprocess.Popen(
            [
                *me,
                "--role",
                "server",
                "--port",
                str(sport),
                "--backend-url",
                f"http://127.0.0.1:{bport}",
            ]
        ),
    ]
    try:
        rows = [trio.run(phase, sport, procs[1].pid, app, args) for app in ("plain", "hooked")]
        events, rate = trio.run(webhook_rate, bport, args.joins + args.sends, 60.0)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{args.joins} joins, {args.sends} sends over {args.conns} connections")
    print(f"| app | {' | '.join(COLUMNS)} |")
    print("|---|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = [
            f"{v:.3f}" if n % 3 < 2 else f"{v:.0f}" for n, v in enumerate(row["join"] + row["send"])
        ]
        print(f"| {row['app']} | {' | '.join(cells)} |")
    ratio = rows[1]["join"][2] / max(rows[0]["join"][2], 1e-9)
    print(f"hooked / plain server CPU per join: {ratio:.2f}")
    print(f"webhook events delivered: {events}, {rate:,.0f} events/s")
    if args.joins < 1000:
        print("NOT MEANINGFUL as numbers: a smoke run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
