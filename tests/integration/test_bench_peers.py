"""The bench's peers (issue 22: ``node-ws``, ``c-ceiling``, bench/peers/): each speaks the
protocol subset the load clients use, and the harness runs them end to end at tiny N with
exactly the expected joins and deliveries counted. (Their numbers are not checked here.)

node-ws needs Node >= 18 and ``npm ci`` in clients/js; c-ceiling needs ``cc``. Without them
these tests skip with the reason, unless RTCORE_REQUIRE_BROWSER=1 (as .ci/run sets, which
installs node): then missing node is a failure, as in the JavaScript client's tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import wsproto
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)

from bench import peers
from bench.harness import ServerProc
from tests.integration.test_bench_smoke import table_rows

ROOT = Path(__file__).resolve().parents[2]


def require(kind: str) -> None:
    why = peers.problem(kind)
    if why is None:
        return
    if kind == "node-ws" and os.environ.get("RTCORE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RTCORE_REQUIRE_BROWSER=1, but {why}")
    pytest.skip(why)


@pytest.fixture(params=peers.PEERS)
def peer(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    require(request.param)
    server = ServerProc(request.param)
    try:
        yield server.address
    finally:
        server.stop()


class Client:
    """A blocking WebSocket client on wsproto: it checks the 101 (Sec-WebSocket-Accept
    included, as wsproto does) and decodes every frame it gets."""

    def __init__(self, address: tuple[str, int], first: bytes = b"") -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/")) + first)
        self.frames: list[Any] = []
        self.closed: int | None = None
        while not self.ws.state == wsproto.connection.ConnectionState.OPEN:
            self._read()

    def send(self, **frame: Any) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(msgpack.packb(frame))))

    def _read(self) -> None:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                continue
            if isinstance(event, CloseConnection):
                self.closed = event.code
            elif isinstance(event, BytesMessage):
                self.frames.append(msgpack.unpackb(event.data))
            elif isinstance(event, TextMessage):
                raise AssertionError(f"a text frame: {event.data!r}")
        if not data and self.closed is None:
            self.closed = -1

    def next(self) -> Any:
        for _ in range(100):  # bounded: each read blocks at most the socket's 5 s timeout
            if self.frames:
                return self.frames.pop(0)
            if self.closed is not None:
                raise AssertionError(f"closed with {self.closed}")
            self._read()
        raise AssertionError("no frame")

    def close_code(self) -> int:
        for _ in range(100):
            if self.closed is not None:
                return self.closed
            self._read()
        raise AssertionError("not closed")


def test_a_peer_speaks_the_load_clients_subset(peer: tuple[str, int]) -> None:
    pub = Client(peer)
    pub.send(t="hello", v=1, echo=False)
    welcome = pub.next()
    assert welcome["t"] == "welcome" and welcome["v"] == 1 and isinstance(welcome["conn"], str)
    pub.send(t="join", id=7, ch="room")
    assert pub.next() == {"t": "ok", "id": 7, "data": {"joined": True}}
    # a subscriber whose hello and join ride behind the upgrade request (pipelined), echo on
    sub = Client(peer, bytes(wire_requests()))
    assert sub.next()["t"] == "welcome"
    assert sub.next() == {"t": "ok", "id": 1, "data": {"joined": True}}
    pub.send(t="send", id=8, ch="room", ev="b", data={"t0": 1.5, "p": b"xyz"})
    ok = pub.next()
    assert ok["t"] == "ok" and ok["id"] == 8 and ok["data"]["recipients"] == 1
    msg = sub.next()
    assert msg == {
        "t": "msg",
        "ch": "room",
        "ev": "b",
        "data": {"t0": 1.5, "p": b"xyz"},
        "from": welcome["conn"],
        "ts": ok["data"]["ts"],
        "mid": ok["data"]["mid"],
    }
    # echo on: the sender's own copy comes before its ok; the other member gets it too
    sub.send(t="send", id=2, ch="room", ev="e", data=None)
    assert sub.next()["ev"] == "e"
    assert sub.next()["data"]["recipients"] == 2
    assert pub.next()["ev"] == "e"
    # echo off: nothing came back to the publisher but its ok; a leave ends the deliveries
    sub.send(t="leave", id=3, ch="room")
    assert sub.next() == {"t": "ok", "id": 3, "data": {"left": True}}
    pub.send(t="send", id=9, ch="room", ev="b")
    assert pub.next()["data"]["recipients"] == 0
    sub.send(t="send", id=4, ch="room", ev="b")
    assert sub.next()["code"] == "not_member"
    sub.send(t="history", id=5, ch="room")
    assert sub.next()["code"] == "unknown_type"


def wire_requests() -> bytes:
    from rtcore.loadtest import wire

    return wire.request(t="hello", v=1) + wire.request(t="join", id=1, ch="room")


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"t": "join", "id": 1, "ch": "x"}, 4002),
        ({"t": "hello", "v": 2}, 4003),
        ([1, 2], 4000),
    ],
)
def test_a_peer_closes_a_bad_first_frame_with_protocol_md_s_code(
    peer: tuple[str, int], first: Any, code: int
) -> None:
    client = Client(peer)
    client.sock.sendall(client.ws.send(BytesMessage(msgpack.packb(first))))
    assert client.close_code() == code


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def both() -> str:
    for kind in peers.PEERS:
        require(kind)
    return ",".join(peers.PEERS)


def test_burst_runs_the_peers_with_every_delivery_counted() -> None:
    out = bench("--servers", both(), "burst", "-n", "20", "-m", "40", "--baseline-messages", "30")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr  # every expected delivery arrived
    rows = table_rows(out.stdout.split("## burst", 1)[1])
    # node-ws gets the baseline's messages, c-ceiling 5 x -m; 20 subscribers each
    assert [(r["server"], r["messages"], r["deliveries"]) for r in rows] == [
        ("node-ws", "30", "600"),
        ("c-ceiling", "200", "4,000"),
    ]
    assert rows[1]["of c-ceiling"] == "100.0%"
    assert float(rows[0]["of c-ceiling"].rstrip("%")) > 0


def test_joins_and_connect_run_the_peers_with_ratios_to_node() -> None:
    """joins: a peer named in --modes (here pipelined) and one added from --servers, every
    client's join acked (the C client reports ready only then); connect: RSS per idle
    connection of each peer's own process, as a ratio to Node's."""
    out = bench("--servers", both(), "joins", "-n", "60", "--modes", "c-ceiling pipelined")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = table_rows(out.stdout.split("## joins", 1)[1])
    assert [(r["presence"], r["clients"]) for r in rows] == [
        ("c-ceiling pipelined", "60"),
        ("node-ws", "60"),
    ]
    assert rows[1]["time vs node-ws"] == "1.00x"
    out = bench("--servers", both(), "connect", "--counts", "40")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = table_rows(out.stdout.split("## connect", 1)[1])
    assert [(r["server"], r["connections"]) for r in rows] == [
        ("node-ws", "40"),
        ("c-ceiling", "40"),
    ]
    assert rows[0]["RSS/conn vs node-ws"] == "1.00x"
    assert float(rows[0]["server RSS MB"]) > 10 > float(rows[1]["server RSS MB"])  # their own


def test_a_missing_peer_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No node, no cc (an empty PATH, an empty build cache): each peer's problem names what
    is missing, and a run that asks for one exits non-zero with that line, no traceback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("RTCORE_LOADTEST_BUILD", str(tmp_path))
    peers.problem.cache_clear()
    try:
        assert (peers.problem("node-ws") or "").startswith("node is not installed")
        assert (peers.problem("c-ceiling") or "").startswith("no C compiler to build")
    finally:
        peers.problem.cache_clear()
    out = bench("--servers", "rtcore,node-ws", "connect", "--counts", "10", env=dict(os.environ))
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "python -m bench: node-ws: node is not installed (the node-ws peer needs Node >= 18)"
    ]
    assert "## connect" not in out.stdout


def test_smoke_and_all_skip_a_missing_peer_with_a_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(peers, "problem", lambda kind: f"{kind} is missing here")
    assert peers.usable(["rtcore", "node-ws", "raw"], skip=True) == ["rtcore", "raw"]
    assert capsys.readouterr().out == "node-ws: SKIPPED (node-ws is missing here)\n"
    with pytest.raises(SystemExit, match="python -m bench: c-ceiling: c-ceiling is missing"):
        peers.usable(["c-ceiling"], skip=False)
