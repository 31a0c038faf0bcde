"""A plain HTTP request on the WebSocket port gets the demo files; WebSockets are unaffected."""

from __future__ import annotations

import trio

from rtcore import Server
from rtcore.server.http import static
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient


async def _exchange(server: Server, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server sends until it closes."""
    stream = await trio.open_tcp_stream(*server.addresses[0])
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received


async def test_a_plain_get_gets_the_demo_page_then_the_connection_closes(
    start_server: StartServer,
) -> None:
    server = await start_server()
    with trio.fail_after(10):
        reply = await _exchange(server, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply == static.respond(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"<title>rtcore chat</title>" in reply


async def test_head_unknown_paths_and_other_methods(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(10):
        head = await _exchange(server, b"HEAD /msgpack.js HTTP/1.1\r\nHost: x\r\n\r\n")
        missing = await _exchange(server, b"GET /../pyproject.toml HTTP/1.1\r\nHost: x\r\n\r\n")
        post = await _exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert missing.endswith(static.ABOUT)
    assert post.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")


async def test_a_broken_upgrade_still_gets_wsprotos_400(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(10):
        reply = await _exchange(
            server,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_websockets_work_on_the_same_port_after_http_requests(
    start_server: StartServer,
) -> None:
    server = await start_server()
    with trio.fail_after(10):
        await _exchange(server, b"GET /rtcore-client.js HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await RawClient.connect(server.addresses[0])
        welcome = await raw.hello()
    assert welcome.conn
