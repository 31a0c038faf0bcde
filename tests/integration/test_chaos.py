"""A live chaos test: a real server in a child process under a low open-files limit, a few
hundred stalled connections, noisy clients sending random and nested frames, the backend
listing members in JSON and msgpack -- while a bystander receives every message sent to its
channel, in order. The server must stay up, refuse the excess cheaply (never by running out of
descriptors), lose nothing, and log no ERROR."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio

from rtcore.client import open_client
from rtcore.protocol import frames as f
from rtcore.server_api import AsyncServerAPI
from tests.integration.child import Child, child_server
from tests.integration.raw import Closed, RawClient

SECRET = "c" * 32
NOFILE = 256  # the derived cap: 256 - api_max_connections (64) - 64 reserved = 128
STALLED = 300
NOISY = 4
MESSAGES = 300
CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0
api_port = 0

[limits]                        # max_connections: derived from the open-files limit
max_connections_per_ip = 10000  # everything comes from 127.0.0.1: the server-wide cap decides
connect_rate_per_ip = 10000.0
connect_burst_per_ip = 10000
handshake_timeout = 30.0        # stalled connections stay for the whole test

[[apps]]
name = "default"
server_secret = "{SECRET}"
"""


def nested(rng: random.Random, depth: int) -> bytes:
    """A random msgpack value nested ``depth`` levels (maps and arrays, varied leaves), encoded
    by hand: msgpack's own packer stops at 511 levels, a hostile client does not."""
    leaf = rng.choice([None, True, -1, 2**40, 1.5, "x", b"\x00\xff", "é" * 3])
    head, tail = rng.choice(
        [
            (b"\x91", b""),  # [value]
            (b"\x81\xa1k", b""),  # {"k": value}
            (b"\x81\x07", b""),  # {7: value}
            (b"\x93\x01", b"\xa1y"),  # [1, value, "y"]
        ]
    )
    return head * depth + msgpack.packb(leaf, use_bin_type=True) + tail * depth


def frame(fields: dict[str, Any], key: str, value: bytes) -> bytes:
    """A frame (msgpack map) of ``fields`` plus ``key`` holding the encoded ``value``."""
    out = bytes([0x80 | (len(fields) + 1)])
    for k, v in fields.items():
        out += msgpack.packb(k) + msgpack.packb(v)
    return out + msgpack.packb(key) + value


async def _reply(raw: RawClient) -> Any:
    while True:
        frame = await raw.recv()
        if isinstance(frame, f.Ok | f.Err):
            return frame


async def _noisy(child: Child, seed: int, depths: list[int], closes: list[int]) -> None:
    """Profiles, sends and requests with random nested values (each answered ok or with an
    err code), then random bytes (a documented close)."""
    rng = random.Random(seed)
    raw = await RawClient.connect(child.ws)
    try:
        profile = nested(rng, depths[seed % len(depths)])
        await raw.send_bytes(frame({"t": "hello", "v": 1}, "profile", profile))
        welcome = await raw.recv()
        if isinstance(welcome, f.Welcome):
            await raw.send(t="join", id=1, ch="chaos")
            assert isinstance(await _reply(raw), f.Ok | f.Err)
            for i in range(2, 60):
                value = nested(rng, rng.choice(depths))
                kind = rng.choice(["send", "profile", "members", "unknown", "bad"])
                if kind == "send":
                    data = frame({"t": "send", "id": i, "ch": "chaos", "ev": "e"}, "data", value)
                elif kind == "profile":
                    data = frame({"t": "profile", "id": i}, "data", value)
                elif kind == "members":
                    data = msgpack.packb({"t": "members", "id": i, "ch": "chaos"})
                elif kind == "unknown":
                    data = frame({"t": "no-such-type", "id": i}, "x", value)
                else:
                    data = frame({"t": "join", "id": i}, "ch", value)
                await raw.send_bytes(data)
                answer = await _reply(raw)
                assert answer.id == i, answer
        await raw.send_bytes(rng.randbytes(rng.randint(1, 200)))
        while True:
            await raw.recv()
    except Closed as closed:
        closes.append(closed.code)
    finally:
        await raw.aclose()


async def _bystander(child: Child, ready: trio.Event, got: list[Any]) -> None:
    raw = await RawClient.connect(child.ws)
    await raw.hello()
    await raw.send(t="join", id=1, ch="news")
    assert isinstance(await _reply(raw), f.Ok)
    ready.set()
    while len(got) < MESSAGES:
        frame = await raw.recv()
        if isinstance(frame, f.Msg):
            got.append(frame.data)
    await raw.aclose()


async def _stall(child: Child, rng: random.Random) -> list[trio.SocketStream]:
    stalled = []
    for i in range(STALLED):
        stream = await trio.open_tcp_stream(*child.ws)
        if i % 2:  # half send a partial upgrade, half nothing at all
            partial = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            await stream.send_all(partial[: rng.randint(1, len(partial))])
        stalled.append(stream)
    return stalled


async def _backend(child: Child, listings: list[int]) -> None:
    headers = {"authorization": f"Bearer {SECRET}"}
    members = f"{child.api_url}/v1/apps/default/channels/chaos/members"
    async with (
        AsyncServerAPI(child.api_url, "default", SECRET) as api,
        httpx.AsyncClient(headers=headers) as http,
    ):
        for seq in range(MESSAGES):
            result = await api.send("news", "tick", {"seq": seq})
            assert result["recipients"] == 1
            if seq % 25 == 0:
                as_json = await http.get(members)
                assert as_json.status_code == 200, as_json.text
                assert isinstance(as_json.json()["members"], list)
                as_msgpack = await http.get(members, headers={"accept": "application/msgpack"})
                assert as_msgpack.status_code == 200, as_msgpack.content
                assert isinstance(
                    msgpack.unpackb(as_msgpack.content, strict_map_key=False)["members"], list
                )
                listings.append(seq)


async def _chaos(tmp: Path, depths: list[int]) -> None:
    rng = random.Random(8)
    with trio.fail_after(50):
        async with child_server(tmp, CONFIG, NOFILE) as child:
            got: list[Any] = []
            closes: list[int] = []
            listings: list[int] = []
            async with trio.open_nursery() as nursery:
                ready = trio.Event()
                nursery.start_soon(_bystander, child, ready, got)
                await ready.wait()
                for n in range(NOISY):
                    nursery.start_soon(_noisy, child, n, depths, closes)
                stalled = await _stall(child, rng)
                nursery.start_soon(_backend, child, listings)
            # the excess was refused early, with a 503, not by running out of descriptors
            refused = 0
            for stream in stalled:
                with trio.move_on_after(0.01):
                    try:
                        refused += (await stream.receive_some(64)).startswith(b"HTTP/1.1 503")
                    except trio.BrokenResourceError:
                        pass
                await stream.aclose()
            assert refused >= STALLED - NOFILE // 2, refused
            assert got == [{"seq": i} for i in range(MESSAGES)]  # every one, in order
            assert len(listings) == MESSAGES // 25
            assert len(closes) == NOISY and 1011 not in closes, closes
            assert child.proc.returncode is None
            async with open_client(child.url, reconnect=False) as late:  # still accepts
                await late.join("after")
                assert (await late.send("after", "ping", 1))["recipients"] == 1
        log = child.log()
        assert child.proc.returncode == 0, log
        assert "ERROR" not in log and "Traceback" not in log, log
        assert "cannot accept" not in log, log  # the cap held: accept() never met EMFILE
        assert "refusing connections" in log, log  # the expected refusals (WARNING)


async def test_chaos_server_stays_up_and_the_bystander_loses_nothing(tmp_path: Path) -> None:
    await _chaos(tmp_path, depths=[0, 1, 2, 3, 4, 5, 6])


async def test_chaos_with_deeply_nested_values(tmp_path: Path) -> None:
    # around the depths that broke JSON (~1,000), msgpack fan-out (~1,021-1,023) and decoding
    await _chaos(tmp_path, depths=[1000, 1021, 1023, 600, 2, 1500, 100, 510, 511, 512])
