"""Regression (issue 8, crash 2): running out of file descriptors ended the server, because
the accept loop let EMFILE escape. A real server in a child process under a low open-files
limit, with the connection caps set far above it so that accept() itself fails."""

from __future__ import annotations

from pathlib import Path

import trio

from rtcore.client import open_client
from tests.integration.child import child_server

SECRET = "s" * 32
CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0
api_port = 0

[limits]
max_connections = 5000          # far above the open-files limit: accept() meets EMFILE
api_max_connections = 5000
max_connections_per_ip = 5000
connect_rate_per_ip = 5000.0
connect_burst_per_ip = 5000

[[apps]]
name = "default"
server_secret = "{SECRET}"
"""


async def _until_logged(child: object, text: str) -> None:
    for _ in range(500):
        if text in child.log():  # type: ignore[attr-defined]
            return
        await trio.sleep(0.02)
    raise AssertionError(f"never logged: {text}\n{child.log()}")  # type: ignore[attr-defined]


async def _healthz(address: tuple[str, int]) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = await stream.receive_some(4096)
    await stream.aclose()
    return answer


async def test_running_out_of_descriptors_does_not_end_the_server(tmp_path: Path) -> None:
    with trio.fail_after(45):
        async with child_server(tmp_path, CONFIG, nofile=64) as child:
            stalled = [await trio.open_tcp_stream(*child.ws) for _ in range(100)]
            await _until_logged(child, "client port: cannot accept connections: Too many open")
            assert child.proc.returncode is None
            for s in stalled:
                await s.aclose()
            async with open_client(child.url, reconnect=False) as c:  # accepts and serves
                await c.join("room")
                assert (await c.send("room", "ping", 1))["recipients"] == 1

            stalled = [await trio.open_tcp_stream(*child.api) for _ in range(100)]
            await _until_logged(child, "server API port: cannot accept connections: Too many")
            assert child.proc.returncode is None
            for s in stalled:
                await s.aclose()
            assert (await _healthz(child.api)).startswith(b"HTTP/1.1 200 ")
        log = child.log()
        assert child.proc.returncode == 0, log
        assert "ERROR" not in log and "Traceback" not in log, log
