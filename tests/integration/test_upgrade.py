"""The WebSocket upgrade over real sockets (rtcore.server.upgrade behind the connection): a
request split over many reads, frames in the same read as the request, oversized and
malformed heads, wrong versions; each refusal a status, none a logged error, and the server
serving on."""

from __future__ import annotations

import logging
import sys

import msgpack
import pytest
import trio
import trio.testing

from rtcore import Server
from rtcore.server import upgrade
from tests.integration.conftest import StartServer
from tests.integration.test_transport import assert_still_serving, errors_logged

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(obj: object) -> bytes:
    """A client's binary frame (all-zero mask), small payloads only."""
    payload = msgpack.packb(obj)
    assert len(payload) < 126
    return bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, data
        data += chunk
    return data


async def response_to(server: Server, raw: bytes) -> bytes:
    """The whole response to ``raw`` (the server closes after a refusal)."""
    stream = await trio.open_tcp_stream(*server.addresses[0])
    try:
        await stream.send_all(raw)
    except trio.BrokenResourceError:
        pass  # (closed after an early answer to a long request)
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.aclose()
    return data


async def test_a_request_split_over_many_small_reads_upgrades(server: Server) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        for i in range(len(UPGRADE)):  # one byte per write: one read each, or a few
            await stream.send_all(UPGRADE[i : i + 1])
            await trio.sleep(0.001)
        assert (await read_until(stream, b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        await stream.send_all(frame({"t": "hello", "v": 1}))
        assert b"welcome" in await read_until(stream, b"welcome")
        await stream.aclose()


async def test_frames_in_the_same_read_as_the_request_are_all_handled(server: Server) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        hello = frame({"t": "hello", "v": 1})
        joins = b"".join(frame({"t": "join", "id": i, "ch": f"c{i}"}) for i in (1, 2))
        await stream.send_all(UPGRADE + hello + joins)
        data = await read_until(stream, b"\x82")
        while data.count(b"joined") < 2:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
        head, frames = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert frames.index(b"welcome") < frames.index(b"joined")
        await stream.aclose()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * upgrade.MAX_HEAD, 431),
        (b"GET /%s HTTP/1.1\r\nHost: x\r\n" % (b"a" * upgrade.MAX_HEAD), 431),
        (b"GARBAGE\x00\x01\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nBroken line\r\n\r\n", 400),
        (UPGRADE.replace(b"Version: 13", b"Version: 8"), 426),
        (UPGRADE.replace(b"Sec-WebSocket-Version: 13\r\n", b""), 400),
        (UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400),
        (UPGRADE.replace(b"Upgrade: websocket\r\n", b"Upgrade: h2c\r\n"), 400),
        (UPGRADE.replace(b"GET", b"PUT", 1), 400),
    ],
)
async def test_bad_upgrades_get_their_status_and_no_error_is_logged(
    server: Server, caplog: pytest.LogCaptureFixture, raw: bytes, status: int
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(10):
        response = await response_to(server, raw)
        assert response.startswith(b"HTTP/1.1 %d " % status), response[:200]
        if status == 426:
            assert b"\r\nSec-WebSocket-Version: 13\r\n" in response
        await assert_still_serving(server)
    assert errors_logged(caplog) == []


async def test_a_plain_request_is_still_served_a_file(server: Server) -> None:
    with trio.fail_after(10):
        response = await response_to(server, b"GET /rtcore-client.js HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b"text/javascript" in response.split(b"\r\n\r\n", 1)[0]


async def test_the_handshake_deadline_spares_connections_that_said_hello(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    """The handshake timeout is one task's deadlines, not a scope per connection: a
    connection established in time is not closed at its deadline, one that is not is."""
    server = await start_server(handshake_timeout=5.0)
    with trio.fail_after(60):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        await stream.send_all(UPGRADE + frame({"t": "hello", "v": 1}))
        await read_until(stream, b"welcome")
        silent = await trio.open_tcp_stream(*server.addresses[0])
        await silent.send_all(UPGRADE)  # upgraded, no hello
        await read_until(silent, b"\r\n\r\n")
        closing = await read_until(silent, b"\x88")  # a close frame, at the deadline: 4001
        assert closing[closing.index(b"\x88") + 2 :][:2] == (4001).to_bytes(2, "big")
        assert trio.current_time() >= 5.0
        assert sum(conn.established for conn in server.connections.values()) == 1
        await stream.send_all(frame({"t": "join", "id": 1, "ch": "a"}))
        assert b"joined" in await read_until(stream, b"joined")
        await stream.aclose()
        await silent.aclose()


async def test_a_connection_leaves_the_deadlines_at_its_hello_or_its_close(
    start_server: StartServer,
) -> None:
    """An established connection costs the handshake deadlines nothing, and a closed one is
    not kept alive by them (idle memory)."""
    server = await start_server(handshake_timeout=60.0)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        await stream.send_all(UPGRADE)
        await read_until(stream, b"\r\n\r\n")
        assert len(server._handshakes) == 1  # upgraded, no hello yet
        await stream.send_all(frame({"t": "hello", "v": 1}))
        await read_until(stream, b"welcome")
        assert len(server._handshakes) == 0
        gone = await trio.open_tcp_stream(*server.addresses[0])
        await gone.send_all(UPGRADE)
        await read_until(gone, b"\r\n\r\n")
        assert len(server._handshakes) == 1
        await gone.aclose()  # no hello: the connection ends before its deadline
        while len(server.connections) > 1:  # noqa: ASYNC110 (no event for it: poll, bounded)
            await trio.sleep(0.01)
        assert len(server._handshakes) == 0
        await stream.aclose()


async def test_an_idle_connection_holds_no_read_buffer_capacity(server: Server) -> None:
    """wsproto's bytearray keeps a read's capacity after its frames are consumed: it is
    swapped for an empty one before the connection waits (idle memory); a frame split over
    two reads is still put together."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        await stream.send_all(UPGRADE + frame({"t": "hello", "v": 1, "pad": "x" * 100}))
        await read_until(stream, b"welcome")
        [conn] = server.connections.values()
        buffer = conn._ws._proto._frame_decoder.buffer.buffer
        assert len(buffer) == 0 and sys.getsizeof(buffer) == sys.getsizeof(bytearray())
        join = frame({"t": "join", "id": 1, "ch": "a"})
        await stream.send_all(join[:5])  # (two writes: likely two reads)
        await stream.send_all(join[5:])
        assert b"joined" in await read_until(stream, b"joined")
        await stream.aclose()
