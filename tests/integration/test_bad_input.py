"""Hostile and broken input: each gets its documented close code or error reply, and a
well-behaved client on the same server keeps being served throughout."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtcore import CloseCode, Config, Server
from rtcore.client import open_client
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import Closed, RawClient


async def assert_still_serving(server: Server) -> None:
    async with open_client(url(server), reconnect=False) as c:
        await c.join("canary")
        assert (await c.send("canary", "ping", 1))["recipients"] == 1


Action = Callable[[RawClient], Awaitable[None]]


def raw_send(data: bytes) -> Action:
    async def act(c: RawClient) -> None:
        await c.send_bytes(data)

    return act


async def hello_then(c: RawClient, data: bytes) -> None:
    assert isinstance(await c.hello(), f.Welcome)
    await c.send_bytes(data)


CLOSE_CASES: list[tuple[str, Action, int]] = [
    ("malformed msgpack before hello", raw_send(b"\xc1\xc1"), CloseCode.PROTOCOL_ERROR),
    ("malformed msgpack after hello", lambda c: hello_then(c, b"\xc1"), CloseCode.PROTOCOL_ERROR),
    ("a non-map", lambda c: hello_then(c, msgpack.packb([1, 2, 3])), CloseCode.PROTOCOL_ERROR),
    (
        "a map without t",
        lambda c: hello_then(c, msgpack.packb({"id": 1})),
        CloseCode.PROTOCOL_ERROR,
    ),
    (
        "a request before hello",
        raw_send(msgpack.packb({"t": "join", "id": 1, "ch": "a"})),
        CloseCode.HELLO_EXPECTED,
    ),
    (
        "a hello with a wrong type",
        raw_send(msgpack.packb({"t": "hello", "v": "1"})),
        CloseCode.HELLO_EXPECTED,
    ),
    (
        "a hello of another version",
        raw_send(msgpack.packb({"t": "hello", "v": 9})),
        CloseCode.UNSUPPORTED_VERSION,
    ),
    (
        "a hello for an unknown app",
        raw_send(msgpack.packb({"t": "hello", "v": 1, "app": "zz"})),
        CloseCode.UNKNOWN_APP,
    ),
    (
        "a duplicate hello",
        lambda c: hello_then(c, msgpack.packb({"t": "hello", "v": 1})),
        CloseCode.DUPLICATE_HELLO,
    ),
    ("a text frame", lambda c: c.send_text('{"t": "hello"}'), CloseCode.UNSUPPORTED_DATA),
    ("an oversized frame", raw_send(b"\x00" * 70_000), CloseCode.MESSAGE_TOO_BIG),
    (
        "an invalid websocket frame (reserved opcode)",
        lambda c: c.send_raw(b"\x83\x80\x00\x00\x00\x00"),
        1002,
    ),
]


@pytest.mark.parametrize(("case", "action", "code"), CLOSE_CASES, ids=[c[0] for c in CLOSE_CASES])
async def test_broken_input_gets_its_close_code(
    server: Server, case: str, action: Action, code: int
) -> None:
    with trio.fail_after(10):
        async with open_client(url(server)) as bystander:
            await bystander.join("room")
            raw = await RawClient.connect(server.addresses[0])
            await action(raw)
            closed = await raw.closed()
            assert closed.code == code, closed
            assert closed.reason
            assert (await bystander.send("room", "still", 1))["recipients"] == 1
        await assert_still_serving(server)


async def test_bad_requests_get_coded_error_replies_and_the_connection_stays(
    server: Server,
) -> None:
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()
        cases = [
            ({"t": "teleport", "id": 1}, "unknown_type"),
            ({"t": "join", "id": 2}, "bad_request"),
            ({"t": "join", "id": 3, "ch": ["a"]}, "bad_request"),
            ({"t": "join", "id": 4, "ch": "no spaces"}, "invalid_channel"),
            ({"t": "send", "id": 5, "ch": "a", "ev": "e"}, "not_member"),
            ({"t": "members", "id": 6, "ch": "a", "limit": 100_000}, "bad_request"),
            ({"t": "profile", "id": 7, "data": "x" * 5000}, "profile_too_large"),
        ]
        for obj, code in cases:
            await raw.send(**obj)
            reply = await raw.recv()
            assert isinstance(reply, f.Err) and (reply.id, reply.code) == (obj["id"], code), reply
            assert reply.message
        await raw.send(t="join", id=9, ch="fine")
        assert isinstance(await raw.recv(), f.MemberEvent)
        assert await raw.recv() == f.Ok(9, {"joined": True})


async def test_no_hello_within_the_handshake_timeout_closes_with_4001(
    start_server: StartServer,
) -> None:
    server = await start_server(handshake_timeout=0.2)
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        assert (await raw.closed()).code == CloseCode.HELLO_TIMEOUT
        await assert_still_serving(server)


async def test_a_silent_tcp_peer_is_dropped_after_the_handshake_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(handshake_timeout=0.2)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        assert await stream.receive_some(100) == b""  # closed without any HTTP response
        await stream.aclose()


async def test_a_bad_http_upgrade_gets_400(server: Server) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        # An upgrade without Sec-WebSocket-Key/Version (a plain GET gets the demo page now).
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        response = await stream.receive_some(1000)
        assert response.startswith(b"HTTP/1.1 4"), response
        await stream.aclose()
        await assert_still_serving(server)


async def test_a_peer_that_stops_answering_pings_is_closed_with_4009(
    start_server: StartServer,
) -> None:
    server = await start_server(heartbeat_interval=0.2)
    with trio.fail_after(10):
        async with open_client(url(server)) as healthy:  # the client answers pings
            deaf = await RawClient.connect(server.addresses[0], answer_pings=False)
            await deaf.hello()
            assert (await deaf.closed()).code == CloseCode.HEARTBEAT_TIMEOUT
            assert deaf.pings >= 1
            assert healthy.is_connected()
            assert (await healthy.broadcast("e"))["recipients"] == 1


async def test_shutdown_sends_going_away(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()
        server.shutdown()
        closed = await raw.closed()
        assert closed.code == CloseCode.GOING_AWAY


@st.composite
def nested_frames(draw: st.DrawFn) -> bytes:
    """A hello, profile, send or broadcast whose profile/data nests arrays and maps to any
    depth: within the 32 levels of protocol.md §4.3.1, beyond them, and beyond what msgpack
    decodes (1024). Built as bytes, since msgpack will not pack the deepest."""
    t = draw(st.sampled_from(["hello", "profile", "profile", "send", "broadcast"]))
    field = "profile" if t == "hello" else "data"
    head = msgpack.packb({"t": t, "v": 1, "id": 2, "ch": "r", "ev": "e", field: None})[:-1]
    # Around 1024 is where msgpack stops decoding, and where a frame wrapping a value a few
    # levels deeper than the request carried it could fail to encode (issue 8, crash 1).
    depth = draw(st.one_of(st.integers(0, 40), st.integers(1019, 1025)))
    levels = draw(st.lists(st.sampled_from([b"\x91", b"\x81\xa1k"]), min_size=1, max_size=8))
    leaf = draw(
        st.sampled_from(
            [
                b"\x00",
                b"\x81\xc4\x01k\x01",  # a bin key
                b"\xd4\x05\x01",  # an ext type
                b"\xd6\xff\x00\x00\x00\x01",  # a timestamp
                b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # NaN
                b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # 2**64-1
            ]
        )
    )
    return head + b"".join(levels[i % len(levels)] for i in range(depth)) + leaf


JOIN = msgpack.packb({"t": "join", "id": 1, "ch": "r"})
MEMBERS = msgpack.packb({"t": "members", "id": 3, "ch": "r"})

client_frames = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([JOIN, MEMBERS]),
    nested_frames(),
    st.dictionaries(
        st.sampled_from(["t", "id", "ch", "ev", "data", "echo", "limit", "after", "v"]),
        st.one_of(
            st.sampled_from(
                ["hello", "join", "leave", "send", "broadcast", "members", "profile", "x"]
            ),
            st.integers(-2, 2**64 - 1),
            st.text(max_size=8),
            st.none(),
            st.booleans(),
            st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3),
        ),
        max_size=6,
    ).map(lambda d: msgpack.packb(d)),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frames=st.one_of(
        st.lists(client_frames, min_size=1, max_size=6),
        # a nested value in a channel, then a listing of its members
        st.tuples(st.just(JOIN), nested_frames(), st.just(MEMBERS)).map(list),
    ),
    hello_first=st.booleans(),
)
def test_random_frames_never_take_the_server_down(
    frames: list[bytes], hello_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A synchronous test running its own trio loop per example: hypothesis examples cannot
    # share pytest-trio's per-test fixtures.
    caplog.clear()

    async def scenario() -> None:
        server = Server(Config(port=0, api_port=None))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            with trio.fail_after(10):
                code = await send_random(server, frames, hello_first)
                assert code != CloseCode.INTERNAL_ERROR, "a server bug closed the connection"
                await assert_still_serving(server)
            server.shutdown()

    trio.run(scenario)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def send_random(server: Server, frames: list[bytes], hello_first: bool) -> int | None:
    """Send the frames; the close code the server sent, if it closed the connection."""
    raw = await RawClient.connect(server.addresses[0])
    if hello_first:
        await raw.hello()
    for data in frames:
        try:
            await raw.send_bytes(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
    # Whatever happened, that connection answers or closes -- and others are served. Replies
    # come in request order, so the probe's reply means every frame before it was handled.
    probe = 2**53 - 7
    code = None
    with trio.move_on_after(5):
        try:
            await raw.send(t="leave", id=probe, ch="probe")
            while True:
                frame = await raw.recv()
                if isinstance(frame, f.Ok | f.Err) and frame.id == probe:
                    break
        except Closed as closed:
            code = closed.code
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await raw.aclose()
    return code


async def test_a_hello_sent_in_the_same_write_as_the_upgrade_is_not_lost(server: Server) -> None:
    """Regression: wsproto's server handshake drops bytes that follow the upgrade request."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.addresses[0])
        upgrade = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        hello = msgpack.packb({"t": "hello", "v": 1})
        masked = bytes([0x82, 0x80 | len(hello)]) + b"\0\0\0\0" + hello  # all-zero mask
        await stream.send_all(upgrade + masked)
        data = b""
        while b"welcome" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, data
            data += chunk
        await stream.aclose()


async def test_a_server_bug_closes_only_that_connection_with_1011(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcore.core.session import session

    def broken_join(self: object, frame: object, now: float) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(session._HANDLERS, f.Join, broken_join)
    with trio.fail_after(10):
        async with open_client(url(server)) as bystander:
            raw = await RawClient.connect(server.addresses[0])
            await raw.hello()
            await raw.send(t="join", id=1, ch="room")
            assert (await raw.closed()).code == CloseCode.INTERNAL_ERROR
            assert (await bystander.broadcast("still-here"))["recipients"] == 1
