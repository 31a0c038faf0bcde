"""The transport layer under pressure: accept errors, connections counted from the first byte,
error boundaries around every shared task, bounded work per read, the inbound frame budget."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import Message

from rtcore import CloseCode, Server
from rtcore.client import open_client
from rtcore.config import AppConfig
from rtcore.observe import throttled_log
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from rtcore.server import accept
from rtcore.server.connection import EVENTS_PER_BATCH
from rtcore.server.flusher import Flusher
from rtcore.server.http import router as http
from tests.integration.conftest import Checkpoints, StartServer, url
from tests.integration.raw import RawClient

SECRET = "s" * 32


async def assert_still_serving(server: Server) -> None:
    async with open_client(url(server), reconnect=False) as c:
        await c.join("canary")
        assert (await c.send("canary", "ping", 1))["recipients"] == 1


async def until(predicate: Any, seconds: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (polling: it watches server state, not an event)."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


async def reply(raw: RawClient) -> Any:
    """The next ok or err (presence and messages on the way are skipped)."""
    while True:
        frame = await raw.recv()
        if isinstance(frame, f.Ok | f.Err):
            return frame


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- accept loops ---------------------------------------------------------------------------


class ScriptedListener(trio.abc.Listener[Any]):
    """accept() returns or raises the script's items in order, then waits forever."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script

    async def accept(self) -> Any:
        await trio.lowlevel.checkpoint()
        if not self.script:
            await trio.sleep_forever()
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


async def test_accept_loop_survives_running_out_of_descriptors_and_memory(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    codes = [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM]
    listener = ScriptedListener(
        [_oserror(c) for c in codes] + ["first"] + [_oserror(c) for c in codes] + ["second"]
    )
    got: list[str] = []
    with caplog.at_level(logging.WARNING, logger="rtcore.accept"), trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept.accept_forever, listener, got.append, "test port")
            await until(lambda: len(got) == 2)
            nursery.cancel_scope.cancel()
    assert got == ["first", "second"]
    # eight errors within a second: logged once (rate-limited), not eight times
    (record,) = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert "Too many open files" in record.getMessage()


async def test_accept_loop_logs_again_after_the_quiet_period(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    script: list[Any] = [
        _oserror(errno.EMFILE) for _ in range(int(throttled_log.LOG_EVERY / accept.BACKOFF) + 5)
    ]
    listener = ScriptedListener([*script, "done"])
    got: list[str] = []
    with caplog.at_level(logging.WARNING, logger="rtcore.accept"), trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept.accept_forever, listener, got.append, "test port")
            await until(lambda: got == ["done"], seconds=30.0)
            nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(messages) == 2
    assert "more times" in messages[1]


async def test_accept_loop_does_not_hide_other_errors() -> None:
    listener = ScriptedListener([_oserror(errno.EBADF)])
    with trio.fail_after(10), pytest.raises(OSError, match="Bad file descriptor"):
        await accept.accept_forever(listener, lambda s: None, "test port")


async def test_a_failing_handoff_loses_that_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Stream:
        def __init__(self) -> None:
            self.socket = trio.socket.socket()

    streams = [Stream(), Stream()]
    listener = ScriptedListener(list(streams))
    got: list[Any] = []

    def handoff(stream: Any) -> None:
        if stream is streams[0]:
            raise ZeroDivisionError("a bug")
        got.append(stream)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept.accept_forever, listener, handoff, "test port")
            await until(lambda: got == [streams[1]])
            nursery.cancel_scope.cancel()
    assert streams[0].socket.fileno() == -1  # closed
    assert len(errors_logged(caplog)) == 1
    streams[1].socket.close()


# -- counting connections from the first byte ----------------------------------------------


async def test_stalled_connections_count_toward_max_connections(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=3)
    host, port = server.addresses[0]
    with trio.fail_after(10):
        stalled = [await trio.open_tcp_stream(host, port) for _ in range(3)]
        await until(lambda: server.admission.open == 3)
        extra = await trio.open_tcp_stream(host, port)
        answer = await extra.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b'"code": "server_full"' in answer
        assert await extra.receive_some(4096) == b""  # and closed
        await extra.aclose()
        await stalled.pop().aclose()
        await until(lambda: server.admission.open == 2)
        raw = await RawClient.connect(server.addresses[0])
        assert isinstance(await raw.hello(), f.Welcome)
        for s in stalled:
            await s.aclose()
        await raw.aclose()
        await until(lambda: server.admission.open == 0)


async def test_stalled_upgrades_count_per_ip(start_server: StartServer) -> None:
    server = await start_server(max_connections_per_ip=2)
    host, port = server.addresses[0]
    with trio.fail_after(10):
        stalled = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        await until(lambda: server.admission.counts.get("127.0.0.1") == 2)
        third = await RawClient.connect(server.addresses[0])  # told why: upgrade, then 4020
        assert (await third.closed()).code == CloseCode.TOO_MANY_CONNECTIONS
        for s in stalled:
            await s.aclose()
        await until(lambda: "127.0.0.1" not in server.admission.counts)
        await assert_still_serving(server)


async def test_only_a_few_refused_connections_are_told_why(start_server: StartServer) -> None:
    from rtcore.core.limits.admission import EXPLAINED_REFUSALS_PER_IP

    server = await start_server(max_connections_per_ip=1, close_timeout=30.0)
    host, port = server.addresses[0]
    with trio.fail_after(10):
        held = await trio.open_tcp_stream(host, port)
        await until(lambda: server.admission.counts.get("127.0.0.1") == 1)
        waiting = [await trio.open_tcp_stream(host, port) for _ in range(EXPLAINED_REFUSALS_PER_IP)]
        await until(lambda: server.admission.explaining.get("127.0.0.1") == len(waiting))
        excess = await trio.open_tcp_stream(host, port)
        try:  # closed at once, long before close_timeout: no upgrade is waited for
            assert await excess.receive_some(4096) == b""
        except trio.BrokenResourceError:
            pass  # a reset says the same
        assert server.admission.open == 1 + len(waiting)
        for s in [held, excess, *waiting]:
            await s.aclose()
        await until(lambda: server.admission.open == 0 and not server.admission.explaining)


async def test_the_api_port_has_its_own_cap_and_idle_timeout(start_server: StartServer) -> None:
    server = await start_server(api_max_connections=2, api_idle_timeout=0.3)
    host, port = server.api_addresses[0]
    with trio.fail_after(10):
        idle = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        await until(lambda: server.api_connections == 2)
        extra = await trio.open_tcp_stream(host, port)
        answer = await extra.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b'"code": "too_many_connections"' in answer
        await extra.aclose()
        for s in idle:  # the idle timeout closes them
            assert await s.receive_some(4096) == b""
            await s.aclose()
        await until(lambda: server.api_connections == 0)
        ok = await trio.open_tcp_stream(host, port)
        await ok.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await ok.receive_some(4096)).startswith(b"HTTP/1.1 200 ")
        await ok.aclose()


# -- error boundaries ----------------------------------------------------------------------


async def test_a_failing_http_response_is_a_500_for_that_request_only(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(apps=(AppConfig("a", server_secret=SECRET),))
    real = http._respond
    failures = 0

    async def respond(stream: Any, conn: Any, status: int, payload: Any, accept: str) -> None:
        nonlocal failures
        if status == 200 and payload.get("channels") == 0 and failures == 0:
            failures += 1
            raise RecursionError("an encoder bug")
        await real(stream, conn, status, payload, accept)

    monkeypatch.setattr(http, "_respond", respond)
    host, port = server.api_addresses[0]
    request = (
        f"GET /v1/apps/a/stats HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {SECRET}\r\n\r\n"
    ).encode()
    with trio.fail_after(10):
        victim = await trio.open_tcp_stream(host, port)
        await victim.send_all(request)
        data = b""
        while chunk := await victim.receive_some(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b'"internal_error"' in data  # answered, then closed (the loop ended)
        await victim.aclose()
        again = await trio.open_tcp_stream(host, port)
        await again.send_all(request)
        assert (await again.receive_some(4096)).startswith(b"HTTP/1.1 200 ")
        await again.aclose()
        await assert_still_serving(server)
    (record,) = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is RecursionError


async def test_a_failing_flush_closes_only_that_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    victims: set[int] = set()
    real = Flusher._flush_one

    def flush_one(self: Flusher, outbox: Any, last: Any, joined: Any) -> Any:
        if id(outbox) in victims:
            raise ZeroDivisionError("a flusher bug")
        return real(self, outbox, last, joined)

    monkeypatch.setattr(Flusher, "_flush_one", flush_one)
    with trio.fail_after(10):
        clients = []
        for _ in range(3):  # a sender, the victim, a bystander: all in the room
            raw = await RawClient.connect(server.addresses[0])
            await raw.hello()
            await raw.send(t="join", id=1, ch="room", echo=False)
            assert isinstance(await reply(raw), f.Ok)
            clients.append(raw)
        sender, victim, bystander = clients
        victims.add(id(list(server.connections.values())[1].outbox))
        for i in range(3):  # several passes meet the failure: still logged once
            await sender.send(t="send", id=10 + i, ch="room", ev="n", data=i)
            assert isinstance(await reply(sender), f.Ok)
        assert (await victim.closed()).code == CloseCode.INTERNAL_ERROR
        got = []
        while len(got) < 3:
            frame = await bystander.recv()
            if isinstance(frame, f.Msg):
                got.append(frame.data)
        assert got == [0, 1, 2]
    (record,) = errors_logged(caplog)
    assert "flush" in record.getMessage()


def _break_for(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, victim: object) -> None:
    """Make ``cls.name`` raise for the instance ``victim`` only."""
    real = getattr(cls, name)

    def method(self: object, *args: Any) -> Any:
        if self is victim:
            raise ZeroDivisionError(f"a bug in {name}")
        return real(self, *args)

    monkeypatch.setattr(cls, name, method)


async def test_a_failing_heartbeat_check_closes_only_that_connection(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rtcore.core.session.session import Session

    server = await start_server(heartbeat_interval=0.2)
    with trio.fail_after(10):
        victim = await RawClient.connect(server.addresses[0])
        await victim.hello()
        (conn,) = server.connections.values()
        _break_for(monkeypatch, Session, "revalidate", conn.session)
        other = await RawClient.connect(server.addresses[0])
        await other.hello()
        assert (await victim.closed()).code == CloseCode.INTERNAL_ERROR
        # the heartbeat goes on for the others: they keep being pinged, pass after pass
        while other.pings < 3:
            with trio.move_on_after(0.05):
                await other.recv()
        await other.send(t="members", id=1, ch="x")
        assert isinstance(await other.recv(), f.Ok)
    (record,) = errors_logged(caplog)
    assert "heartbeat" in record.getMessage()


async def test_a_failing_cleanup_still_frees_the_connection(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rtcore.core.session.session import Session

    server = await start_server(max_connections_per_ip=2)
    with trio.fail_after(10):
        victim = await RawClient.connect(server.addresses[0])
        await victim.hello()
        (conn,) = server.connections.values()
        _break_for(monkeypatch, Session, "disconnected", conn.session)
        await victim.aclose()
        await until(lambda: not server.connections)
        assert server.admission.counts == {} and server.admission.open == 0
        await assert_still_serving(server)
        await assert_still_serving(server)  # both per-IP slots are free again
    assert len(errors_logged(caplog)) == 1


# -- bounded work per read ------------------------------------------------------------------


async def test_a_pipelining_client_does_not_starve_another(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcore.core.session import session

    requests = 2600  # ~90 KB, in one write: more than four batches of frames
    order: list[bool] = []  # True: the other client's request
    real = session.Session.receive
    b_request = b""
    b_fd = -1

    def receive(self: Any, data: bytes, *args: Any) -> Any:
        order.append(b"marker" in data)
        if len(order) == 10:  # mid-burst, the other client's request arrives
            os.write(b_fd, b_request)
        return real(self, data, *args)

    with trio.fail_after(20):
        a = await RawClient.connect(server.addresses[0])
        await a.hello()
        b = await RawClient.connect(server.addresses[0])
        await b.hello()
        b_request = b.ws.send(Message(data=codec.pack({"t": "leave", "id": 1, "ch": "marker"})))
        b_fd = b.stream.socket.fileno()
        monkeypatch.setattr(session.Session, "receive", receive)
        burst = b"".join(
            a.ws.send(Message(data=codec.pack({"t": "leave", "id": i, "ch": "x"})))
            for i in range(requests)
        )
        await a.send_raw(burst)
        answer = await reply(b)
        assert answer.id == 1
        for i in range(requests):  # and the pipelining client is served in full, in order
            answer = await reply(a)
            assert isinstance(answer, f.Ok) and answer.id == i
    assert len(order) == requests + 1
    # the other request was handled within a couple of batches, not after the whole burst
    assert 4 * EVENTS_PER_BATCH < requests  # (so a batch is a small part of the burst)
    assert order.index(True) <= 2 * EVENTS_PER_BATCH


# -- the inbound frame budget ----------------------------------------------------------------

MASK = b"\x00\x00\x00\x00"  # client frames must be masked; a zero mask keeps payloads as-is


async def _flood(server: Server, frames: bytes) -> CloseCode:
    raw = await RawClient.connect(server.addresses[0])
    await raw.hello()
    await raw.send_raw(frames)
    return CloseCode((await raw.closed()).code)


async def test_a_ping_flood_is_closed_with_4031(start_server: StartServer) -> None:
    server = await start_server(inbound_frames_per_second=100.0, inbound_frame_burst=500)
    ping = b"\x89\x80" + MASK
    with trio.fail_after(10):
        assert await _flood(server, ping * 5000) == CloseCode.INBOUND_FLOOD
        assert await _flood(server, (b"\x8a\x80" + MASK) * 5000) == CloseCode.INBOUND_FLOOD  # pongs
        await assert_still_serving(server)


async def test_empty_fragments_are_closed_with_4031(start_server: StartServer) -> None:
    server = await start_server(inbound_frames_per_second=100.0, inbound_frame_burst=500)
    first = b"\x02\x80" + MASK  # binary, not final, empty
    more = b"\x00\x80" + MASK  # continuation, not final, empty
    with trio.fail_after(10):
        assert await _flood(server, first + more * 5000) == CloseCode.INBOUND_FLOOD
        await assert_still_serving(server)


async def test_a_byte_flood_is_closed_with_4031(start_server: StartServer) -> None:
    server = await start_server(inbound_bytes_per_second=1000.0, inbound_byte_burst=100_000)
    raw = await RawClient.connect(server.addresses[0])
    with trio.fail_after(10):
        await raw.hello()
        big = codec.pack({"t": "send", "id": 1, "ch": "x", "ev": "e", "data": "x" * 60_000})
        for _ in range(3):  # 180 kB at once: over the 100 kB burst
            await raw.send_bytes(big)
        assert (await raw.closed()).code == CloseCode.INBOUND_FLOOD
        await assert_still_serving(server)


async def test_the_default_budget_lets_a_pipelining_client_through(server: Server) -> None:
    raw = await RawClient.connect(server.addresses[0])
    with trio.fail_after(10):
        await raw.hello()
        await raw.send(t="join", id=0, ch="x")
        assert isinstance(await reply(raw), f.Ok)
        pings = (b"\x89\x80" + MASK) * 100
        sends = b"".join(
            raw.ws.send(Message(data=codec.pack({"t": "send", "id": i, "ch": "x", "ev": "e"})))
            for i in range(1, 3001)
        )
        await raw.send_raw(pings + sends)
        for i in range(1, 3001):
            answer = await reply(raw)
            assert isinstance(answer, f.Ok) and answer.id == i


async def test_the_heartbeat_pass_yields_between_batches_of_connections(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcore.server import heartbeat

    clients = []
    with trio.fail_after(10):
        for _ in range(5):
            raw = await RawClient.connect(server.addresses[0])
            await raw.hello()
            clients.append(raw)
        monkeypatch.setattr(heartbeat, "CHECKPOINT_EVERY", 2)
        checkpoints = Checkpoints(monkeypatch)
        await server._heartbeat.beat(server.config.limits.heartbeat_interval)
        assert checkpoints.stop() == 2  # after the 2nd and the 4th of 5 connections
        for raw in clients:  # and every connection was checked and kept
            await raw.send(t="members", id=1, ch="x")
            assert isinstance(await reply(raw), f.Ok)


# -- connection setup -------------------------------------------------------------------------


async def test_the_101_and_the_welcome_of_a_pipelined_hello_go_out_in_one_write(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 101 is queued, not written at once: with the hello in the same read as the upgrade
    request, one write carries the 101 and the welcome (a write syscall less per connection)."""
    import wsproto
    from wsproto.events import Request

    from rtcore.server.connection import Connection

    writes: list[bytes] = []
    real = Connection.write_now

    def write_now(self: Connection, data: bytes | memoryview) -> int:
        writes.append(bytes(data))
        return real(self, data)

    monkeypatch.setattr(Connection, "write_now", write_now)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    upgrade = ws.send(Request(host="127.0.0.1", target="/"))
    payload = codec.pack({"t": "hello", "v": 1})  # framed by hand: wsproto's client will not
    hello = b"\x82" + bytes([0x80 | len(payload)]) + b"\0\0\0\0" + payload  # before the 101
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        await stream.send_all(upgrade + hello)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 2:
            data = await stream.receive_some(65536)
            assert data, "the server closed the connection"
            received += data
        await stream.aclose()
    head, frame = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101")
    assert frame[0] == 0x82  # a binary frame: the welcome
    assert len(writes) >= 1
    assert writes[0].startswith(b"HTTP/1.1 101")
    assert writes[0].split(b"\r\n\r\n", 1)[1][:1] == b"\x82"  # the same write holds the welcome


async def test_without_a_pipelined_hello_the_101_is_written_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that waits for the 101 before its hello (a browser) gets it from the
    connection's own write, not from a later flusher pass: it arrives with the flusher
    stalled."""
    monkeypatch.setattr(Flusher, "_write_pending", lambda self, now: 0)  # writes nothing
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])  # returns once the 101 is in
        monkeypatch.undo()
        welcome = await raw.hello()
        assert isinstance(welcome, f.Welcome)


async def test_an_idle_connection_holds_a_small_event_queue_and_frames_stay_in_order(
    server: Server,
) -> None:
    """wsproto's 760-byte deque is swapped for a 56-byte list after the handshake (idle memory,
    bench/RESULTS.md); many frames arriving in one read still come out in order."""
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        assert isinstance(await raw.hello(), f.Welcome)
        [conn] = server.connections.values()
        assert type(conn._ws._events).__name__ == "_EventQueue"
        assert sys.getsizeof(conn._ws._events) < 100
        burst = b"".join(
            raw.ws.send(Message(data=codec.pack({"t": "join", "id": i, "ch": f"c{i}"})))
            for i in range(1, 201)
        )
        await raw.send_raw(burst)  # 200 frames in (about) one read
        ids = []
        while len(ids) < 200:
            frame = await raw.recv()
            if isinstance(frame, (f.Ok, f.Err)):  # (beyond max_channels: too_many_channels)
                ids.append(frame.id)
        assert ids == list(range(1, 201))


async def test_a_request_in_fragments_is_assembled_and_its_size_limited(
    start_server: StartServer,
) -> None:
    """A connection makes its assembler only when a message comes in fragments (idle memory):
    fragments are joined into one request, the next whole message is read as before, and a
    fragmented message over ``max_message_bytes`` is closed with 1009 like a whole one."""
    server = await start_server(max_message_bytes=1000)
    raw = await RawClient.connect(server.addresses[0])
    with trio.fail_after(10):
        await raw.hello()
        join = codec.pack({"t": "join", "id": 1, "ch": "frag"})
        parts = [join[:3], join[3:7], join[7:]]
        await raw.send_raw(
            b"".join(
                raw.ws.send(Message(data=part, message_finished=i == len(parts) - 1))
                for i, part in enumerate(parts)
            )
        )
        answer = await reply(raw)
        assert isinstance(answer, f.Ok) and answer.id == 1
        await raw.send(t="leave", id=2, ch="frag")  # one piece again
        answer = await reply(raw)
        assert isinstance(answer, f.Ok) and answer.id == 2
        big = codec.pack({"t": "send", "id": 3, "ch": "frag", "ev": "e", "data": "x" * 1200})
        await raw.send_raw(
            raw.ws.send(Message(data=big[:600], message_finished=False))
            + raw.ws.send(Message(data=big[600:], message_finished=True))
        )
        assert (await raw.closed()).code == CloseCode.MESSAGE_TOO_BIG
        await assert_still_serving(server)
