"""Several nodes sharing one Redis (``[broker] kind = "redis"``): one server to clients.

Each test starts three nodes in this process (each a full Server with its own Redis
connections) against a private redis-server, and talks to them over real sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from rtcore import Server
from rtcore.config import AppConfig, BrokerConfig
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient

pytestmark = pytest.mark.slow


def broker(url: str, **options: Any) -> BrokerConfig:
    return BrokerConfig(kind="redis", url=url, **options)


async def nodes(start_server: StartServer, redis_url: str, n: int = 3, **kw: Any) -> list[Server]:
    return [
        await start_server(apps=kw.pop("apps", ("default",)) if i == n - 1 else kw.get("apps", ("default",)),
                           config={"broker": broker(redis_url)})
        for i in range(n)
    ]  # fmt: skip


async def client(server: Server, **hello: Any) -> RawClient:
    raw = await RawClient.connect(server.addresses[0])
    welcome = await raw.hello(**hello)
    assert isinstance(welcome, f.Welcome), welcome
    return raw


async def request(raw: RawClient, t: str, rid: int, **fields: Any) -> Any:
    """Send a request and return its reply, collecting pushes that came before it."""
    await raw.send(t=t, id=rid, **fields)
    while True:
        frame = await raw.recv()
        if isinstance(frame, (f.Ok, f.Err)) and frame.id == rid:
            return frame
        raw.pushes.append(frame)  # type: ignore[attr-defined]


async def next_push(raw: RawClient) -> Any:
    pushes: list[Any] = raw.pushes  # type: ignore[attr-defined]
    if pushes:
        return pushes.pop(0)
    return await raw.recv()


def tracked(raw: RawClient) -> RawClient:
    raw.pushes = []  # type: ignore[attr-defined]
    return raw


async def test_send_and_broadcast_reach_members_on_every_node(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(20):
        a, b, c = await nodes(start_server, redis_url)
        ann = tracked(await client(a, profile={"name": "ann"}))
        bob = tracked(await client(b, profile={"name": "bob"}))
        cat = tracked(await client(c))
        for i, raw in enumerate((ann, bob)):
            assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
        sent = await request(bob, "send", 2, ch="room", ev="hi", data={"n": 1})
        assert isinstance(sent, f.Ok)
        for raw in (ann, bob):  # bob hears his own (echo), ann on node A
            msg = await next_push(raw)
            while not isinstance(msg, f.Msg):
                msg = await next_push(raw)
            assert (msg.channel, msg.event, msg.data, msg.mid) == (
                "room", "hi", {"n": 1}, sent.data["mid"],
            )  # fmt: skip
        assert isinstance(await request(cat, "broadcast", 3, ev="all", data=7), f.Ok)
        for raw in (ann, bob, cat):
            msg = await next_push(raw)
            while not (isinstance(msg, f.Msg) and msg.event == "all"):
                msg = await next_push(raw)
            assert msg.data == 7 and msg.channel is None
