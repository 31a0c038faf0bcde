"""The client library: reconnects, buffering, fail-fast, typed errors, iteration limits,
TLS, event loops. Tests marked ``@both_backends`` run under trio and under asyncio (see
``backends.py``); the rest need one loop in particular (trio's autojump clock, two loops at
once). The WebSocket layer's own tests are in test_client_websocket.py."""

from __future__ import annotations

import asyncio
import queue
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import jwt
import pytest
import trio
import trio.testing
from wsproto.events import BytesMessage, CloseConnection

from rtcore import CloseCode, Server
from rtcore.client import (
    BufferFullError,
    Client,
    Connected,
    ConnectionClosedError,
    ConnectionLostError,
    Disconnected,
    EventLoopError,
    EventOverflowError,
    HandshakeError,
    MemberEvent,
    Msg,
    NotConnectedError,
    RequestError,
    RequestTimeout,
    UserEvent,
    open_client,
)
from rtcore.config import AppConfig
from rtcore.core.auth import SessionSettings
from tests.integration.backends import TrioSide, both_backends, trio_thread, wait_until
from tests.integration.conftest import url
from tests.integration.fake_ws import Peer, serve_fake
from tests.integration.test_settings import self_signed


@both_backends
async def test_error_replies_raise_request_error_with_the_code(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with open_client(url(server)) as c:
            with pytest.raises(RequestError) as info:
                await c.send("not-joined", "e", 1)
            assert info.value.code == "not_member"
            with pytest.raises(RequestError) as info:
                await c.join("bad name")
            assert info.value.code == "invalid_channel"


@both_backends
async def test_an_error_in_the_body_comes_out_as_raised(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        with pytest.raises(KeyError, match="mine"):
            async with open_client(url(server)) as c:
                await c.join("room")
                raise KeyError("mine")
        while await side.call(server.members, "default", "room"):  # noqa: ASYNC110 (closed?)
            await anyio.sleep(0.005)


@both_backends
async def test_a_fatal_close_on_connect_raises_connection_closed(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10), pytest.raises(ConnectionClosedError) as info:
        async with open_client(url(server), app="nope"):
            pass
    assert info.value.code == CloseCode.UNKNOWN_APP


@both_backends
async def test_no_server_and_no_reconnect_raises_the_network_error(side: TrioSide) -> None:
    with anyio.fail_after(10), pytest.raises(OSError):
        async with open_client("ws://127.0.0.1:1/", reconnect=False):
            pass


@both_backends
async def test_reconnect_rejoins_channels_with_the_latest_profile(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with (
            open_client(url(server)) as watcher,
            open_client(url(server), profile={"v": 1}, backoff_initial=0.01) as c,
        ):
            attempts: list[int] = []
            connects: list[str] = []
            disconnects: list[tuple[int, str]] = []
            c.on_reconnect_attempt(attempts.append)
            c.on_connect(connects.append)
            c.on_disconnect(lambda code, reason: disconnects.append((code, reason)))
            await watcher.join("room", echo=False)
            await c.join("room")
            await c.update_profile({"v": 2})
            seen = watcher.events()
            old = c.id
            await side.call(
                lambda: server.connections[old].request_close(  # type: ignore[index]
                    CloseCode.INTERNAL_ERROR, "test: drop"
                )
            )
            await wait_until(lambda: c.is_connected() and c.id != old)
            kinds = []
            async for ev in seen:
                if isinstance(ev, MemberEvent) and ev.kind != "member_update":
                    kinds.append((ev.kind, ev.member["id"], ev.member["data"]))
                if len(kinds) == 2:
                    break
            assert kinds == [("member_leave", old, {"v": 2}), ("member_join", c.id, {"v": 2})]
            assert [m["id"] for m in await watcher.get_members("room")] == [watcher.id, c.id]
            assert attempts == [1] and connects == [c.id]
            assert disconnects == [(CloseCode.INTERNAL_ERROR, "test: drop")]
            assert (await c.send("room", "e", 1))["recipients"] == 2


@both_backends
async def test_requests_wait_for_the_connection_or_fail_fast(side: TrioSide) -> None:
    first = await side.start_server()
    port = first.addresses[0][1]
    with anyio.fail_after(20):
        async with (
            open_client(
                url(first), backoff_initial=0.05, backoff_max=0.1, buffer_limit=1
            ) as buffered,
            open_client(url(first), fail_fast=True, backoff_initial=0.05, backoff_max=0.1) as fast,
        ):
            await buffered.join("room")
            await side.call(first.shutdown)
            await wait_until(lambda: not buffered.is_connected() and not fast.is_connected())
            with pytest.raises(NotConnectedError):
                await fast.broadcast("e")
            result: list[int] = []

            async def send_buffered() -> None:
                result.append((await buffered.send("room", "e", "late"))["recipients"])

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send_buffered)
                await wait_until(lambda: buffered._waiting == 1)
                with pytest.raises(BufferFullError):
                    await buffered.send("room", "e", "too many")
                second = await side.start_server(port=port)  # the server comes back
            assert result == [1]  # sent after the rejoin, so the channel was there again
            members = await side.call(second.members, "default", "room")
            assert [m["id"] for m in members] == [buffered.id]


async def five_members_listed(server: Server, **options: Any) -> None:
    """Five members join; the first lists them all, in join order, with their profiles."""
    with anyio.fail_after(10):
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(open_client(url(server), profile={"n": i}))
                for i in range(5)
            ]
            for c in clients:
                await c.join("room")
            members = await clients[0].get_members("room", **options)
            assert [(m["id"], m["data"]) for m in members] == [
                (c.id, {"n": i}) for i, c in enumerate(clients)
            ]


@both_backends
async def test_get_members_fetches_every_page(side: TrioSide) -> None:
    await five_members_listed(await side.start_server(), page_size=2)  # three pages


@both_backends
async def test_get_members_pages_within_the_servers_max_members_page(side: TrioSide) -> None:
    # the default page_size (1000) is above the server's bound: pages of 2, not bad_request
    await five_members_listed(await side.start_server(max_members_page=2))


@both_backends
async def test_an_iterator_that_falls_behind_raises_overflow(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with open_client(url(server)) as c:
            events = c.events(maxsize=2)
            for i in range(3):
                await c.broadcast("e", i)
            got = []
            with pytest.raises(EventOverflowError):
                async for ev in events:
                    got.append(ev.data)  # type: ignore[union-attr]
            assert got == [0, 1]


@both_backends
async def test_iteration_sees_disconnect_and_connect(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with open_client(url(server), backoff_initial=0.01) as c:
            events = c.events()
            conn = server.connections[c.id]  # type: ignore[index]
            await side.call(conn.request_close, CloseCode.GOING_AWAY, "test")
            first = await events.__anext__()
            second = await events.__anext__()
            assert first == Disconnected(CloseCode.GOING_AWAY, "test")
            assert isinstance(second, Connected) and second.reconnected


@both_backends
async def test_requests_time_out_and_in_flight_requests_fail_on_connection_loss(
    side: TrioSide,
) -> None:
    """Against a fake server that welcomes, then never replies (and later hangs up).
    The client runs in the backend's own nursery (trio's, or an asyncio.TaskGroup)."""

    async def script(peer: Peer) -> None:
        requests = 0
        while requests < 2:  # the request that times out, then the one the hang-up cuts
            if isinstance(await peer.next_event(), BytesMessage):
                requests += 1
        await peer.send(CloseConnection(1011, "fake server hangs up"))
        await peer.next_event()  # the client's answer

    port = await side.start(serve_fake, script)
    with anyio.fail_after(10):
        client = Client(f"ws://127.0.0.1:{port}/", request_timeout=0.1, reconnect=False)
        async with side.native_task_group() as n:
            await client.open(n)
            with pytest.raises(RequestTimeout):
                await client.broadcast("e")
            client.request_timeout = 10
            with pytest.raises(ConnectionLostError, match="1011"):
                await client.broadcast("e")
            with pytest.raises(NotConnectedError):
                await client.broadcast("e")


@both_backends
async def test_callbacks_once_off_and_errors(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with open_client(url(server)) as c:
            once: list[Any] = []
            every: list[Any] = []
            star: list[Any] = []
            dropped: list[Any] = []
            c.once("e", lambda m: once.append(m.data))
            c.on("e", lambda m: every.append(m.data))
            c.on("*", lambda m: star.append(m.event))
            c.on("gone", dropped.append)
            c.off("gone")
            c.on("gone2", dropped.append)
            c.off("gone2", dropped.append)
            events = c.events()
            for i in range(2):
                await c.broadcast("e", i)
            await c.broadcast("gone")
            await c.broadcast("gone2")
            c.off()  # every app handler
            await c.broadcast("e", 2)
            seen = [(await events.__anext__()).event for _ in range(5)]  # type: ignore[union-attr]
            assert seen == ["e", "e", "gone", "gone2", "e"]
            assert (once, every, star, dropped) == ([0], [0, 1], ["e", "e", "gone", "gone2"], [])
        errors: list[Exception] = []
        client = Client(url(server), app="nope")
        client.on_error(errors.append)
        async with anyio.create_task_group() as tasks:
            with pytest.raises(ConnectionClosedError):
                await client.open(tasks)
        assert [type(e) for e in errors] == [ConnectionClosedError]


SECRET = "s" * 32


def session_token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, "sid": "s1", "exp": 4_000_000_000, **claims}, SECRET, "HS256")


@both_backends
async def test_token_refresh_user_events_and_session_end(side: TrioSide) -> None:
    app = AppConfig("app", session=SessionSettings(key=SECRET, expire_connections=True))
    server = await side.start_server(apps=(app,))
    with anyio.fail_after(10):
        ended: list[ConnectionClosedError] = []
        user_events: list[UserEvent] = []
        with pytest.raises(ConnectionClosedError) as info:
            async with open_client(url(server), token=session_token("ann")) as c:
                c.on_session_ended(ended.append)
                c.on_user_event(user_events.append)
                assert c.welcome is not None and c.welcome.user == "ann"
                fresh = session_token("ann", exp=int(time.time()) + 600)
                expires = await c.refresh(fresh)
                assert expires is not None and expires > time.time() + 500
                assert c.token == fresh
                events = c.events()
                await side.call(
                    server.publish_user_event, "app", "ann", "profile_update", None, {"n": 1}
                )
                event = await events.__anext__()
                assert isinstance(event, UserEvent) and event.kind == "profile_update"
                await side.call(server.disconnect_user, "app", "ann")
                async for _ in events:  # ends with the 4017 close
                    pass
        assert info.value.code == CloseCode.DISCONNECTED
        assert [e.code for e in ended] == [CloseCode.DISCONNECTED]
        assert [(e.kind, e.user) for e in user_events] == [("profile_update", {"n": 1})]


@both_backends
async def test_tls(side: TrioSide, tmp_path: Path) -> None:
    cert, key, trust = self_signed(tmp_path)
    server = await side.start_server(config={"tls_cert": cert, "tls_key": key})
    host, port = server.addresses[0]
    with anyio.fail_after(15):
        async with (
            open_client(f"wss://{host}:{port}/", ssl_context=trust) as a,
            open_client(f"wss://{host}:{port}/", ssl_context=trust) as b,
        ):
            await a.join("secure")
            await b.join("secure")
            payload = "x" * 60_000  # several TLS records
            streams = [a.events(), b.events()]
            assert (await a.send("secure", "big", payload))["recipients"] == 2
            for got in streams:
                async for event in got:
                    if isinstance(event, Msg):
                        assert event.data == payload
                        break
        # an unknown certificate is refused
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            async with open_client(f"wss://{host}:{port}/", reconnect=False):
                pass
        # plain ws:// to the TLS port: the server hangs up on the HTTP request
        with pytest.raises(HandshakeError, match="hung up during the WebSocket upgrade"):
            async with open_client(url(server), reconnect=False, connect_timeout=2):
                pass


@both_backends
async def test_a_client_made_outside_any_event_loop_runs_in_one(side: TrioSide) -> None:
    """As a module-level client opened later in an app's startup (FastAPI's lifespan)."""
    server = await side.start_server()
    with anyio.fail_after(10):
        client = await anyio.to_thread.run_sync(Client, url(server))  # no loop in that thread
        events = await anyio.to_thread.run_sync(client.events)
        assert not client.is_connected()
        async with anyio.create_task_group() as tasks:
            await client.open(tasks)
            assert await client.join("room")
            assert await events.__anext__() == Connected(client.id, False)  # type: ignore[arg-type]
            await client.aclose()


def test_a_bad_url_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        Client("http://127.0.0.1:8765/")


def test_a_client_called_from_another_event_loop_says_which() -> None:
    """Opened under asyncio in one thread, called from trio in another: EventLoopError."""
    with trio_thread() as side:
        opened: queue.Queue[Client] = queue.Queue()
        release = threading.Event()

        async def owner() -> None:
            server = await side.start_server()
            with anyio.fail_after(10):
                async with open_client(url(server)) as client:
                    opened.put(client)
                    await anyio.to_thread.run_sync(release.wait, 10)

        def run_owner() -> None:
            asyncio.run(owner())

        thread = threading.Thread(target=run_owner, name="owner")
        thread.start()
        try:
            client = opened.get(timeout=10)

            async def intruder() -> None:
                with trio.fail_after(10), pytest.raises(EventLoopError) as info:
                    await client.broadcast("e")
                message = str(info.value)
                assert "opened in the asyncio event loop of thread 'owner'" in message
                assert "called from the trio event loop of thread 'MainThread'" in message

            trio.run(intruder)
        finally:
            release.set()
            thread.join(10)
        assert not thread.is_alive()


def test_outside_an_event_loop_the_client_says_it_needs_one() -> None:
    from rtcore.client._client import _current_loop

    with pytest.raises(EventLoopError, match="needs a running trio or asyncio event loop"):
        _current_loop()


async def test_reconnect_delays_are_jittered_below_a_doubling_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """trio only: the delays are read on trio's autojump clock (virtual seconds)."""
    failed_at: list[float] = []
    delays: list[float] = []
    client = Client("ws://127.0.0.1:1/", backoff_initial=1, backoff_max=4)
    client.on_error(lambda exc: failed_at.append(trio.current_time()))
    client.on_reconnect_attempt(lambda n: delays.append(trio.current_time() - failed_at[-1]))
    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            await client.open(nursery)  # never connects: the port is closed
    assert len(delays) >= 8
    bounds = [min(4, 2**attempt) for attempt in range(len(delays))]
    assert all(0 <= d <= b for d, b in zip(delays, bounds, strict=True)), delays
    assert len(set(delays)) == len(delays), delays  # drawn, not fixed


@asynccontextmanager
async def native_timeout(side: TrioSide, seconds: float) -> AsyncIterator[None]:
    """The backend's own timeout: ``trio.move_on_after``, or ``asyncio.timeout`` (whose
    TimeoutError is swallowed here, to match)."""
    if side.backend == "trio":
        with trio.move_on_after(seconds):
            yield
    else:
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                yield


@both_backends
async def test_the_backends_own_timeouts_cut_requests_and_close_the_client(
    side: TrioSide,
) -> None:
    closes: list[CloseConnection] = []

    async def script(peer: Peer) -> None:  # never replies
        closes.append(await peer.until_closed())

    port = await side.start(serve_fake, script)
    with anyio.fail_after(10):
        async with native_timeout(side, 0.2):
            async with open_client(f"ws://127.0.0.1:{port}/") as c:
                async with native_timeout(side, 0.05):
                    await c.join("room")  # cut short by the caller's timeout
                assert c._replies == {} and c.is_connected() and c.channels == {}
                await anyio.sleep_forever()  # cut short: open_client closes the client
        await wait_until(lambda: len(closes) == 1)
        assert [(e.code, e.reason) for e in await side.call(list, closes)] == [(1000, "")]


README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_readme_asyncio_example_runs(server: Server) -> None:
    """The README's asyncio example, as written, in a fresh interpreter (pytest-trio serves)."""
    readme = README.read_text(encoding="utf-8")
    (example,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "asyncio.run(main())" in block
    ]
    assert "ws://127.0.0.1:8765/" in example and "import trio" not in example
    code = example.replace("ws://127.0.0.1:8765/", url(server))
    with trio.fail_after(30):
        out = await trio.run_process(
            [sys.executable, "-c", code], capture_stdout=True, capture_stderr=True, check=False
        )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().splitlines() == [
        "got alert {'level': 'info'}",
        "recipients: 1",
        "members: [{'name': 'billing'}]",
    ]
