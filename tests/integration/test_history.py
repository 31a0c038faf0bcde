"""Channel history over real sockets (memory broker): a client dropped abruptly recovers every
message exactly once and in order; beyond the history window, or on another node, it is told
it did not; history pages and their permissions; draining a node."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio
import trio.testing

from rtcore import CloseCode, Server
from rtcore.client import Client, Msg, Position, Recovered, RequestError, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import SessionSettings
from tests.integration.backends import wait_until
from tests.integration.conftest import StartServer, url, virtual_wall
from tests.integration.proxy import Proxy

SECRET = "h" * 32


def app(size: int = 2000, ttl: float = 300.0) -> AppConfig:
    return AppConfig(
        "default",
        session=SessionSettings(key=SECRET),
        server_secret=SECRET,
        channels=(
            ChannelRule("feed*", history_size=size, history_ttl=ttl),
            ChannelRule("vip*", history_size=size, history="signed_in"),
        ),
    )


class Received:
    """What a client's handlers saw: the feed's messages and its recoveries."""

    def __init__(self, client: Client) -> None:
        self.data: list[Any] = []
        self.recoveries: list[Recovered] = []
        self.disconnects: list[int] = []
        client.on("*", self.msg)
        client.on_recover(self.recoveries.append)
        self.reasons: list[str] = []
        client.on_disconnect(lambda code, reason: self.disconnects.append(code))
        client.on_disconnect(lambda code, reason: self.reasons.append(reason))

    def msg(self, msg: Msg) -> None:
        self.data.append(msg.data)


async def publish(server: Server, first: int, count: int, per_batch: int = 10) -> None:
    """Publish ``first .. first + count - 1`` to "feed", a batch every 20 ms."""
    for n in range(first, first + count, per_batch):
        for i in range(n, min(n + per_batch, first + count)):
            server.send("default", "feed", "e", i)
        await trio.sleep(0.02)


async def test_a_client_dropped_for_two_seconds_gets_every_message_once_in_order(
    start_server: StartServer, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(apps=(app(),), wall=virtual_wall)
    proxy = Proxy(server.addresses[0])
    await nursery.start(proxy.serve)
    with trio.fail_after(120):
        async with open_client(proxy.url(), backoff_initial=0.2, backoff_max=1.0) as client:
            got = Received(client)
            await client.join("feed")
            await publish(server, 0, 100)
            await wait_until(lambda: len(got.data) == 100)
            proxy.refusing = True
            proxy.cut()  # abrupt: RST, no close frame
            await publish(server, 100, 1000)  # ~2 s of messages while the client is away
            proxy.refusing = False
            await wait_until(lambda: got.recoveries)
            await publish(server, 1100, 100)
            await wait_until(lambda: len(got.data) >= 1200)
            await trio.sleep(0.5)  # nothing more arrives
            assert got.data == list(range(1200))  # every message exactly once, in order
            assert [(r.channel, r.recovered, r.reason) for r in got.recoveries] == [
                ("feed", True, None)
            ]
            assert client.positions["feed"].offset == 1200
            assert set(got.disconnects) == {1006} and len(got.disconnects) > 1  # retried meanwhile


async def test_beyond_the_history_window_the_client_is_told_it_did_not_recover(
    start_server: StartServer, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(apps=(app(size=100),), wall=virtual_wall)
    proxy = Proxy(server.addresses[0])
    await nursery.start(proxy.serve)
    with trio.fail_after(120):
        async with open_client(proxy.url(), backoff_initial=0.2, backoff_max=1.0) as client:
            got = Received(client)
            await client.join("feed")
            await publish(server, 0, 10)
            await wait_until(lambda: len(got.data) == 10)
            proxy.refusing = True
            proxy.cut()
            await publish(server, 10, 1000)
            proxy.refusing = False
            await wait_until(lambda: got.recoveries)
            (recovery,) = got.recoveries
            assert (recovery.recovered, recovery.reason) == (False, "gap_too_old")
            assert recovery.position is not None and recovery.position.offset == 1010
            await publish(server, 1010, 5)
            await wait_until(lambda: len(got.data) == 15)
            assert got.data == [*range(10), *range(1010, 1015)]  # nothing replayed, then live


async def test_a_drained_node_closes_with_1001_and_another_node_says_epoch_changed(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    first = await start_server(apps=(app(),))
    second = await start_server(apps=(app(),))
    proxy = Proxy(first.addresses[0])
    await nursery.start(proxy.serve)
    with trio.fail_after(30):
        async with open_client(proxy.url(), backoff_initial=0.05) as client:
            got = Received(client)
            await client.join("feed")
            for i in range(50):
                first.send("default", "feed", "e", i)
            proxy.target = second.addresses[0]  # the load balancer's next choice
            first.shutdown()
            await wait_until(lambda: got.recoveries)
            assert got.data == list(range(50))  # everything sent before the drain arrived
            assert got.disconnects == [CloseCode.GOING_AWAY]
            assert got.reasons == ["server shutting down: reconnect to any node"]
            (recovery,) = got.recoveries
            assert (recovery.recovered, recovery.reason) == (False, "epoch_changed")
            second.send("default", "feed", "e", 50)
            await wait_until(lambda: len(got.data) == 51)
            assert client.positions["feed"].offset == 1


@pytest.fixture
async def server_with_history(start_server: StartServer) -> Server:
    return await start_server(apps=(app(),))


async def test_on_the_same_node_a_reconnect_recovers_and_duplicates_are_dropped(
    server_with_history: Server,
) -> None:
    server = server_with_history
    with trio.fail_after(30):
        async with open_client(url(server), backoff_initial=0.05) as client:
            got = Received(client)
            await client.join("feed")
            for i in range(5):
                server.send("default", "feed", "e", i)
            await wait_until(lambda: len(got.data) == 5)
            saved = client.positions["feed"]
            assert saved.offset == 5
            server.connections[client.id or ""].request_close(CloseCode.INTERNAL_ERROR, "test")
            await wait_until(lambda: got.recoveries)
            assert got.recoveries[0].recovered and got.data == list(range(5))
            # an explicit position from an earlier run: joining again replays after it
            await client.leave("feed")
            server.send("default", "feed", "e", 5)
            await client.join("feed", recover=Position(saved.epoch, 3))
            await wait_until(lambda: len(got.recoveries) == 2)
            assert got.recoveries[1].recovered
            assert got.data == [0, 1, 2, 3, 4, 3, 4, 5]


async def test_history_pages_through_the_client_with_permissions(
    server_with_history: Server,
) -> None:
    server = server_with_history
    for i in range(7):
        server.send("default", "feed", "e", i)
        server.send("default", "vip", "e", i)
    token = jwt.encode({"sub": "ann"}, SECRET, "HS256")
    with trio.fail_after(30):
        async with (
            open_client(url(server)) as anon,
            open_client(url(server), token=token) as signed,
        ):
            page = await anon.history("feed", limit=3)
            assert [m.data for m in page.messages] == [0, 1, 2]
            assert page.top.offset == 7 and page.next is not None
            rest = await anon.history("feed", since=page.next, limit=10)
            assert [m.data for m in rest.messages] == [3, 4, 5, 6] and rest.next is None
            newest = await anon.history("feed", limit=2, reverse=True)
            assert [m.offset for m in newest.messages] == [7, 6]
            try:
                await anon.history("vip")
            except RequestError as exc:
                assert exc.code == "forbidden"
            else:
                raise AssertionError("an anonymous client read a signed_in history")
            assert len((await signed.history("vip")).messages) == 7
            try:
                await anon.history("feed", since=Position("other", 1))
            except RequestError as exc:
                assert exc.code == "unrecoverable_position"
            else:
                raise AssertionError("a foreign position was accepted")


async def test_the_server_api_pages_through_history(server_with_history: Server) -> None:
    from rtcore.server_api import AsyncServerAPI

    server = server_with_history
    for i in range(5):
        server.send("default", "feed", "e", {"n": i, "raw": b"\x00"})
    host, port = server.api_addresses[0]
    with trio.fail_after(30):
        async with AsyncServerAPI(f"http://{host}:{port}", "default", SECRET) as api:
            page = await api.history("feed", limit=2)
            assert [m["data"]["n"] for m in page["messages"]] == [0, 1]
            assert page["messages"][0]["data"]["raw"] == b"\x00"  # msgpack keeps bin
            everything = await api.get_history("feed")
            assert [m["data"]["n"] for m in everything] == [0, 1, 2, 3, 4]
            newest = await api.history("feed", limit=1, reverse=True)
            assert newest["messages"][0]["offset"] == 5 and newest["offset"] == 5
            assert server.history("default", "feed", limit=2)["next"] == {
                "epoch": page["epoch"],
                "offset": 2,
            }


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=1001", 400, "bad_request"),  # over max_history_page (1000)
        ("limit=0", 400, "bad_request"),
        ("reverse=yes", 400, "bad_request"),
        ("reverse=True", 400, "bad_request"),
        ("since_epoch=E", 400, "bad_request"),  # one of the two
        ("since_epoch=E&since_offset=%2B1", 400, "bad_request"),  # "+1": digits only
        ("since_epoch=E&since_offset=%201", 400, "bad_request"),
        ("since_epoch=E&since_offset=12345678901234567", 400, "bad_request"),  # 17 digits
        ("since_epoch=E&since_offset=9007199254740992", 400, "bad_request"),  # 2**53
        ("since_epoch=E&since_offset=9007199254740991", 409, "unrecoverable_position"),
        ("limit=1000&reverse=false", 200, None),
    ],
)
async def test_the_server_api_history_refusals_are_the_documented_ones(
    server_with_history: Server, query: str, status: int, code: str | None
) -> None:
    """docs/api.md, the history endpoint's refusals (issue 21, item 13)."""
    import httpx

    server = server_with_history
    server.send("default", "feed", "e", 1)
    host, port = server.api_addresses[0]
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            got = await http.get(
                f"http://{host}:{port}/v1/apps/default/channels/feed/history?{query}",
                headers={"Authorization": f"Bearer {SECRET}"},
            )
    assert got.status_code == status, got.text
    if code is not None:
        assert got.json()["code"] == code


def test_the_client_drops_a_message_at_or_before_its_position_and_reports_a_new_epoch() -> None:
    client = Client("ws://127.0.0.1:1/")
    got = Received(client)
    client.positions["feed"] = Position("e1", 5)
    for offset, epoch in [(5, "e1"), (6, "e1"), (6, "e1"), (4, "e1"), (7, "e1"), (1, "e2")]:
        client._dispatch(Msg("feed", "e", (epoch, offset), None, 0, "m", offset, epoch))
    assert got.data == [("e1", 6), ("e1", 7), ("e2", 1)]
    assert [(r.recovered, r.reason, r.position) for r in got.recoveries] == [
        (False, "epoch_changed", Position("e2", 1))
    ]
