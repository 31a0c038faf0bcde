"""The C subscriber (rtcore/loadtest/csrc/csub.c) against a scripted server on a real socket:
it answers the server's pings with pongs (so bench runs can keep rtcore's heartbeat on), does
not count them as deliveries, and says when each latency sample was taken."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import msgpack
import pytest

from rtcore.loadtest import native


def server_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def read_until(conn: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = conn.recv(4096)
        assert chunk, "the client went away"
        data += chunk
    return data


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the client went away"
        data += chunk
    return data


def test_csub_answers_pings_and_counts_only_deliveries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    monkeypatch.setenv("RTCORE_LOADTEST_BUILD", str(tmp_path))
    assert native.build("csub")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        sub = native.CSubscriber(listener.getsockname(), 1, None)
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with conn:
                read_until(conn, b"\r\n\r\n")
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                read_until(conn, b"hello")
                conn.sendall(server_frame(2, msgpack.packb({"t": "welcome", "id": "c1"})))
                assert isinstance(sub.result(10), float)  # ready
                sub.call("count", expected=2, timeout=10, sample_every=1)
                t0 = time.monotonic()
                msg = msgpack.packb({"t": "msg", "ch": "c", "data": {"t0": t0}})
                conn.sendall(server_frame(9, b"hb") + server_frame(2, msg) + server_frame(2, msg))
                # the pong: FIN + opcode 10, masked (all-zero key), the ping's payload
                assert read_exactly(conn, 8) == b"\x8a\x82\x00\x00\x00\x00hb"
                got = sub.result(10)
        finally:
            sub.stop()
    assert got["total"] == 2  # the ping is not a delivery
    assert len(got["latencies"]) == len(got["sampled_at"]) == 2
    assert all(t0 <= when <= time.monotonic() for when in got["sampled_at"])
