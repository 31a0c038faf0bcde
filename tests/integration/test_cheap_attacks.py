"""Regression tests of issue 20's findings on the HTTP side and in observability: cheap
inputs that produced tracebacks, client-chosen metric labels, forged log lines, and static
files served past the per-IP connection rate."""

from __future__ import annotations

import io
import logging

import trio

from rtcore import Server
from rtcore.observe import log_config
from rtcore.protocol import CloseCode
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient
from tests.integration.test_observe import scrape


async def _exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server sends until it closes
    (bounded by the caller's fail_after)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received


async def test_a_malformed_request_target_gets_400_without_a_traceback(
    start_server: StartServer,
) -> None:
    """Finding 5: ``GET //[x`` made urlsplit raise in Request: a 500 and a logged traceback
    for every such request."""
    server = await start_server()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("rtcore").addHandler(handler)
    try:
        with trio.fail_after(10):
            for _ in range(3):
                reply = await _exchange(
                    server.api_addresses[0],
                    b"GET //[x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                assert reply.startswith(b"HTTP/1.1 400 "), reply[:60]
                assert b'"code":"bad_request"' in reply.replace(b" ", b"")
                assert b"malformed request target" in reply
            # the port goes on serving
            ok = await _exchange(
                server.api_addresses[0],
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            assert ok.startswith(b"HTTP/1.1 200 ")
    finally:
        logging.getLogger("rtcore").removeHandler(handler)
    assert not [r for r in records if r.exc_info], "no traceback for the client's fault"


async def test_close_codes_chosen_by_clients_are_one_metric_label(
    start_server: StartServer,
) -> None:
    """Finding 6: every close code a client sent before its hello became a series of
    ``rtcore_connections_closed_total{code}``."""
    server = await start_server()
    with trio.fail_after(20):
        for code in (3001, 3002, 4500, 4999, 4017):
            raw = await RawClient.connect(server.addresses[0])
            await raw.close(code, "bye")
            await raw.closed()
        normal = await RawClient.connect(server.addresses[0])
        await normal.hello()
        await normal.close(1000)
        await normal.closed()
        for _ in range(200):  # the server reports each close as its task ends
            samples = await scrape(server)
            closed = {
                dict(labels)["code"]: v
                for (name, labels), v in samples.items()
                if name == "rtcore_connections_closed_total"
            }
            if sum(closed.values()) >= 6:
                break
            await trio.sleep(0.01)
    assert closed == {"client_other": 4.0, "4017": 1.0, "1000": 1.0}


def test_a_close_reason_cannot_forge_a_text_log_line() -> None:
    """Finding 7: a newline in a client's close reason wrote a second log line."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        log_config.configure("INFO", "text", stream)
        logging.getLogger("rtcore.connections").info(
            "connection %s closed: %s", "c1", "1000 (bye\n2026-01-01 INFO rtcore: forged\x1b[2J)"
        )
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("rtcore").exception("a failure\nwith two lines")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(
        "connection c1 closed: 1000 (bye\\n2026-01-01 INFO rtcore: forged\\x1b[2J)"
    )
    assert lines[1].endswith("a failure\\nwith two lines")
    assert lines[2] == "Traceback (most recent call last):"  # tracebacks keep their lines


async def test_static_files_are_refused_past_the_connection_rate(
    start_server: StartServer,
) -> None:
    """Finding 11: a plain GET on the WebSocket port got its file even when the per-IP
    connection rate had refused the connection."""
    server: Server = await start_server(connect_rate_per_ip=0.001, connect_burst_per_ip=3)
    request = b"GET /rtcore-client.js HTTP/1.1\r\nHost: x\r\n\r\n"
    with trio.fail_after(10):
        replies = [await _exchange(server.addresses[0], request) for _ in range(5)]
        raw = await RawClient.connect(server.addresses[0])
        assert (await raw.closed()).code == CloseCode.CONNECTION_RATE_LIMITED
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 3 + [
        b"HTTP/1.1 429 Too Many Requests"
    ] * 2
    assert b"too many new connections" in replies[-1]
