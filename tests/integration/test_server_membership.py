"""Server-side membership over real sockets (protocol.md §5.7, §5.6): the backend adds users
and connections to channels and takes them out, on two nodes sharing Redis; the token's
``subscribe`` claim; and what a reconnect does (the server puts the user back)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio

from rtcore import CloseCode, Server
from rtcore.backend import ServerAPIError
from rtcore.client import Joined, Left, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import SessionSettings
from rtcore.protocol import frames as f
from rtcore.server_api import AsyncServerAPI
from tests.integration.backends import wait_until
from tests.integration.conftest import StartServer, url
from tests.integration.raw import Closed, RawClient
from tests.integration.test_redis_nodes import (
    SECRET,
    SERVER_SECRET,
    api_url,
    next_push,
    nodes,
    request,
    tracked,
)

PRIVATE = AppConfig(
    "default",
    session=SessionSettings(key=SECRET),
    server_secret=SERVER_SECRET,
    channels=(ChannelRule("private:*", join="nobody"),),
)


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, "exp": 4_000_000_000, **claims}, SECRET, "HS256")


async def connect(server: Server, user: str, **claims: Any) -> tuple[RawClient, f.Welcome]:
    raw = tracked(await RawClient.connect(server.addresses[0]))
    welcome = await raw.hello(token=token(user, **claims), echo=False)
    assert isinstance(welcome, f.Welcome), welcome
    return raw, welcome


async def push_of(raw: RawClient, kind: type) -> Any:
    """The next push of type ``kind`` (presence and other pushes before it skipped)."""
    while True:
        frame = await next_push(raw)
        if isinstance(frame, kind):
            return frame


@pytest.mark.slow
async def test_add_and_remove_cross_nodes_and_the_user_is_put_back_at_hello(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(PRIVATE,))
        ann_a, _ = await connect(a, "ann")
        ann_b, _ = await connect(b, "ann")
        bob_b, bob_welcome = await connect(b, "bob")
        refused = await request(ann_a, "join", 1, ch="private:1")
        assert isinstance(refused, f.Err) and refused.code == "forbidden"
        async with AsyncServerAPI(api_url(a), "default", SERVER_SECRET) as backend:
            # Through node A: ann's connections on A and B; bob's one connection, by id.
            assert await backend.add_member("private:1", user="ann") == {"added": 1, "full": 0}
            await backend.add_member("private:1", conn=bob_welcome.conn)
            for raw in (ann_a, ann_b, bob_b):
                joined = await push_of(raw, f.Joined)
                assert (joined.channel, joined.reason) == ("private:1", "added")
            # Members now, on both nodes: a message from A reaches B.
            sent = await request(ann_a, "send", 2, ch="private:1", ev="hi", data=1)
            assert isinstance(sent, f.Ok), sent
            for raw in (ann_b, bob_b):
                msg = await push_of(raw, f.Msg)
                assert (msg.channel, msg.event, msg.data) == ("private:1", "hi", 1)
            # A new connection of ann, on either node, is put in at its hello.
            for node in (a, b):
                again, _ = await connect(node, "ann")
                joined = await push_of(again, f.Joined)
                assert (joined.channel, joined.reason) == ("private:1", "added")
                await again.close()
            # A bad channel name is refused with its code.
            with pytest.raises(ServerAPIError) as caught:
                await backend.add_member("no spaces", user="ann")
            assert (caught.value.status, caught.value.code) == (422, "invalid_channel")
        async with AsyncServerAPI(api_url(b), "default", SERVER_SECRET) as backend:
            # Through node B: ann out everywhere, with the left frame; bob stays.
            await backend.remove_member("private:1", user="ann", message="bye")
            for raw in (ann_a, ann_b):
                assert await push_of(raw, f.Left) == f.Left("private:1", "removed", "bye")
            sent = await request(bob_b, "send", 3, ch="private:1", ev="still", data=2)
            assert isinstance(sent, f.Ok)
            refused = await request(ann_a, "send", 3, ch="private:1", ev="x", data=0)
            assert isinstance(refused, f.Err) and refused.code == "not_member"
            # ...and forgotten: ann's next connection is not put back.
            later, _ = await connect(a, "ann")
            await request(later, "members", 1, ch="lobby")
            assert not [p for p in later.pushes if isinstance(p, f.Joined)]  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_the_subscribe_claim_joins_at_hello_on_every_node(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(PRIVATE,))
        ann, _ = await connect(a, "ann", subscribe=["private:dm", "news"])
        bob, _ = await connect(b, "bob", subscribe=["private:dm"])
        for raw, channels in ((ann, ["private:dm", "news"]), (bob, ["private:dm"])):
            got = [(await push_of(raw, f.Joined)) for _ in channels]
            assert [(j.channel, j.reason) for j in got] == [(c, "subscribe") for c in channels]
        sent = await request(bob, "send", 1, ch="private:dm", ev="hi", data="ann?")
        assert isinstance(sent, f.Ok)
        msg = await push_of(ann, f.Msg)
        assert (msg.channel, msg.data) == ("private:dm", "ann?")
        # A claim of the wrong shape, or too long, refuses the token (4014) on any node.
        for claim in ("private:dm", [f"c{i}" for i in range(65)], [1]):
            raw = await RawClient.connect(b.addresses[0])
            with pytest.raises(Closed) as closed:
                await raw.hello(token=token("eve", subscribe=claim))
            assert closed.value.code == CloseCode.SESSION_INVALID
            assert "subscribe" in closed.value.reason


async def test_the_python_client_reports_joins_and_is_put_back_after_a_reconnect(
    start_server: StartServer,
) -> None:
    with trio.fail_after(15):
        server = await start_server(apps=(PRIVATE,))
        async with open_client(
            url(server), token=token("ann"), backoff_initial=0.01, echo=False
        ) as ann:
            heard: list[Any] = []
            ann.on_joined(heard.append)
            ann.on_left(heard.append)
            events = ann.events()
            server.add_member("default", "private:1", user="ann")
            assert await events.__anext__() == Joined("private:1", "added")
            await wait_until(lambda: heard == [Joined("private:1", "added")])
            old = ann.id
            server.connections[old].request_close(CloseCode.INTERNAL_ERROR, "test: drop")  # type: ignore[index]
            await wait_until(lambda: ann.is_connected() and ann.id != old)
            # The server put it back (the client did not ask: the join rule says nobody).
            await wait_until(lambda: len(heard) == 2)
            assert heard[1] == Joined("private:1", "added")
            assert [m["user"] for m in server.members("default", "private:1")] == ["ann"]
            assert (await ann.send("private:1", "e", 1))["recipients"] == 0
            server.remove_member("default", "private:1", user="ann")
            await wait_until(lambda: len(heard) == 3)
            assert isinstance(heard[2], Left) and heard[2].reason == "removed"
