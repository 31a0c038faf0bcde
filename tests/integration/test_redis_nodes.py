"""Several nodes sharing one Redis (``[broker] kind = "redis"``): one server to clients.

Each test starts three nodes in this process (each a full Server with its own Redis
connections) against a private redis-server, and talks to them over real sockets.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import attrs
import httpx
import jwt
import pytest
import trio

from rtcore import CloseCode, Server
from rtcore.client import open_client
from rtcore.config import AppConfig, BrokerConfig, ChannelRule
from rtcore.core.auth import SessionSettings
from rtcore.core.limits.limiter import Rule
from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.keys import Keys
from rtcore.protocol import frames as f
from rtcore.server_api import AsyncServerAPI
from tests.integration.backends import wait_until
from tests.integration.child import child_server
from tests.integration.conftest import StartServer
from tests.integration.proxy import Proxy
from tests.integration.raw import Closed, RawClient
from tests.integration.redisd import RedisProcess, redis_cluster
from tests.integration.test_history import Received, publish

pytestmark = pytest.mark.slow


def broker(url: str, **options: Any) -> BrokerConfig:
    return BrokerConfig(kind="redis", url=url, **options)


async def nodes(
    start_server: StartServer, redis_url: str, n: int = 3, apps: tuple[Any, ...] = ("default",)
) -> list[Server]:
    return [await start_server(apps=apps, config={"broker": broker(redis_url)}) for _ in range(n)]


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
        for raw in (ann, bob):
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
        # Each node counts the deliveries it made, of its own messages and the others'.
        on_a, on_b = a.apps["default"].statistics, b.apps["default"].statistics
        assert (on_a.messages, on_a.message_deliveries) == (0, 1)  # ann's copy of bob's
        assert (on_b.messages, on_b.message_deliveries) == (1, 1)  # bob's echo
        assert isinstance(await request(cat, "broadcast", 3, ev="all", data=7), f.Ok)
        for raw in (ann, bob, cat):
            msg = await next_push(raw)
            while not (isinstance(msg, f.Msg) and msg.event == "all"):
                msg = await next_push(raw)
            assert msg.data == 7 and msg.channel is None


async def pushes_until(raw: RawClient, done: Any) -> list[Any]:
    """Pushes up to and including the first one for which ``done(frame)`` is true."""
    seen = []
    while True:
        frame = await next_push(raw)
        seen.append(frame)
        if done(frame):
            return seen


def member_event(kind: str, member_id: str) -> Any:
    return lambda fr: (
        isinstance(fr, f.MemberEvent) and fr.kind == kind and (fr.member["id"] == member_id)
    )


async def test_members_and_member_events_are_the_clusters(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(30):
        a, b, c = await nodes(start_server, redis_url)
        token_free = {"profile": {"team": "red"}}
        watcher = tracked(await client(c, **token_free))
        assert isinstance(await request(watcher, "join", 1, ch="room"), f.Ok)
        own = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
        assert own[-1].member["data"] == {"team": "red"}  # its own join, echoed
        joined = []
        for i, node in enumerate((a, b, a, b)):
            raw = tracked(await client(node, profile={"n": i}))
            assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
            joined.append(raw)
        ids = []
        for _ in joined:  # the watcher on node C hears each join, in join order
            ev = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
            assert ev[-1].kind == "member_join" and ev[-1].first is True
            ids.append(ev[-1].member["id"])
        # A listing from any node is the whole cluster's, in join order, paged.
        page1 = await request(joined[1], "members", 2, ch="room", limit=3)
        assert isinstance(page1, f.Ok), page1
        listed = page1.data["members"]
        assert [m["data"] for m in listed] == [{"team": "red"}, {"n": 0}, {"n": 1}]
        page2 = await request(joined[2], "members", 3, ch="room", after=page1.data["next"])
        assert [m["data"] for m in page2.data["members"]] == [{"n": 2}, {"n": 3}]
        assert page2.data["next"] is None
        assert [m["id"] for m in listed[1:] + page2.data["members"]] == ids
        # A profile update on node B reaches the watcher on C and the listing.
        assert isinstance(await request(joined[1], "profile", 4, data={"n": 11}), f.Ok)
        ev = await pushes_until(watcher, member_event("member_update", ids[1]))
        assert ev[-1].member["data"] == {"n": 11}
        # A leave on node A: the watcher hears it; the listing no longer has it.
        assert isinstance(await request(joined[0], "leave", 5, ch="room"), f.Ok)
        ev = await pushes_until(watcher, member_event("member_leave", ids[0]))
        assert ev[-1].last is True
        page = await request(watcher, "members", 6, ch="room")
        assert [m["id"] for m in page.data["members"]][1:] == ids[1:]


async def test_first_and_last_hold_across_nodes(start_server: StartServer, redis_url: str) -> None:
    secret = "k" * 32
    app = AppConfig("default", session=SessionSettings(key=secret))

    def token(user: str) -> str:
        return jwt.encode({"sub": user, "exp": 4_000_000_000}, secret, "HS256")

    with trio.fail_after(30):
        a, b, c = [
            await start_server(apps=(app,), config={"broker": broker(redis_url)}) for _ in range(3)
        ]
        watcher = tracked(await client(c))
        assert isinstance(await request(watcher, "join", 1, ch="room", echo=False), f.Ok)
        on_a = tracked(await client(a, token=token("alice")))
        on_b = tracked(await client(b, token=token("alice")))
        assert isinstance(await request(on_a, "join", 1, ch="room"), f.Ok)
        first = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
        assert first[-1].first is True
        assert isinstance(await request(on_b, "join", 1, ch="room"), f.Ok)
        second = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
        assert second[-1].kind == "member_join" and second[-1].first is False
        await on_a.stream.aclose()  # abrupt: the node notices, alice stays on node B
        left = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
        assert left[-1].kind == "member_leave" and left[-1].last is False
        assert isinstance(await request(on_b, "leave", 2, ch="room"), f.Ok)
        gone = await pushes_until(watcher, lambda fr: isinstance(fr, f.MemberEvent))
        assert gone[-1].kind == "member_leave" and gone[-1].last is True


SECRET = "s" * 32
SERVER_SECRET = "server-" + "x" * 32
SIGNED = AppConfig("default", session=SessionSettings(key=SECRET), server_secret=SERVER_SECRET)


def token(user: str, sid: str | None = None) -> str:
    claims: dict[str, Any] = {"sub": user, "exp": 4_000_000_000}
    if sid is not None:
        claims["sid"] = sid
    return jwt.encode(claims, SECRET, "HS256")


def api_url(server: Server) -> str:
    host, port = server.api_addresses[0]
    return f"http://{host}:{port}"


async def test_user_events_signouts_and_disconnects_reach_every_node(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(30):
        a, b, c = await nodes(start_server, redis_url, apps=(SIGNED,))
        phone = tracked(await client(b, token=token("ann", "s-phone")))
        laptop = tracked(await client(c, token=token("ann", "s-laptop")))
        bob = tracked(await client(c, token=token("bob", "s-bob")))
        async with AsyncServerAPI(api_url(a), "default", SERVER_SECRET) as backend:
            # A user event sent to node A reaches ann's connections on B and C, not bob's.
            await backend.publish_user_event("ann", "profile_update", data={"name": "Ann"})
            for raw in (phone, laptop):
                ev = await pushes_until(raw, lambda fr: isinstance(fr, f.UserEvent))
                assert ev[-1].kind == "profile_update" and ev[-1].user == {"name": "Ann"}
            # Sign-out of the phone's session: closed on node B with 4016, the laptop stays.
            await backend.publish_user_event("ann", "signout", session={"id": "s-phone"})
            assert (await phone.closed()).code == CloseCode.SESSION_ENDED
            # Its token is refused on every node, including one that starts afterwards.
            late = await start_server(apps=(SIGNED,), config={"broker": broker(redis_url)})
            for node in (a, c, late):
                raw = await RawClient.connect(node.addresses[0])
                await raw.send(t="hello", v=1, token=token("ann", "s-phone"))
                assert (await raw.closed()).code == CloseCode.SESSION_ENDED
            # Disconnecting a user from node A closes its connections on C (4017), not bob's.
            await backend.disconnect_user("ann")
            assert (await laptop.closed()).code == CloseCode.DISCONNECTED
            assert isinstance(await request(bob, "join", 1, ch="still-here"), f.Ok)
            # Ending bob's session through node A: refused everywhere, closed on C.
            await backend.disconnect_session("bob", "s-bob", revoke=True)
            assert (await bob.closed()).code == CloseCode.SESSION_ENDED
            raw = await RawClient.connect(b.addresses[0])
            await raw.send(t="hello", v=1, token=token("bob", "s-bob"))
            assert (await raw.closed()).code == CloseCode.SESSION_ENDED


async def test_the_server_api_lists_the_clusters_members(
    start_server: StartServer, redis_url: str
) -> None:
    with trio.fail_after(30):
        a, b, c = await nodes(start_server, redis_url, apps=(SIGNED,))
        held = []  # (a client garbage-collected would close, and leave)
        for node, user in ((b, "ann"), (c, "bob"), (c, "cat")):
            held.append(tracked(await client(node, token=token(user), profile={"u": user})))
            assert isinstance(await request(held[-1], "join", 1, ch="room"), f.Ok)
        async with AsyncServerAPI(api_url(a), "default", SERVER_SECRET) as backend:
            listing = await backend.get_members("room")  # pages through the whole cluster
            assert [(m["user"], m["data"]) for m in listing] == [
                ("ann", {"u": "ann"}), ("bob", {"u": "bob"}), ("cat", {"u": "cat"}),
            ]  # fmt: skip
        listed, cursor = await a.list_members("default", "room", limit=2)
        assert [m["user"] for m in listed] == ["ann", "bob"]
        listed, cursor = await a.list_members("default", "room", after=cursor)
        assert [m["user"] for m in listed] == ["cat"] and cursor is None
        assert a.members("default", "room") == []  # node A itself holds none of them


async def until(condition: Any, what: str, tries: int = 400) -> None:
    """Poll ``condition()`` every 50 ms (a real Redis restarts in real time); bounded."""
    for _ in range(tries):
        if condition():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_redis_outage_degrades_to_local_and_recovers(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    with trio.fail_after(60):
        a, b = await nodes(start_server, redis_server.url, n=2)
        ann = tracked(await client(a, profile="ann"))
        bob = tracked(await client(b, profile="bob"))
        dan = tracked(await client(b, profile="dan"))
        for raw in (ann, bob, dan):
            assert isinstance(await request(raw, "join", 1, ch="room", echo=False), f.Ok)
        for _ in range(2):  # bob's and dan's joins reach ann
            await pushes_until(ann, lambda fr: isinstance(fr, f.MemberEvent))
        listing = await request(ann, "members", 9, ch="room")
        dan_id = next(m["id"] for m in listing.data["members"] if m["data"] == "dan")
        redis_server.stop()  # SIGKILL: an outage, not a shutdown
        await until(lambda: a.broker.health() and b.broker.health(), "both nodes to notice")
        async with httpx.AsyncClient() as http:
            ready = await http.get(api_url(a) + "/readyz")
            assert ready.status_code == 503 and "Redis" in ready.text
            metrics = (await http.get(api_url(a) + "/metrics")).text
            assert 'rtcore_broker_up{broker="RedisBroker"} 0.0' in metrics
            assert "rtcore_broker_reconnects_total 1.0" in metrics
        # Local delivery goes on; cluster-wide answers are refused at once, plainly.
        cat = tracked(await client(a, profile="cat"))
        assert isinstance(await request(cat, "join", 1, ch="room"), f.Ok)
        ev = await pushes_until(
            ann, lambda fr: isinstance(fr, f.MemberEvent) and fr.member["data"] == "cat"
        )
        assert ev[-1].kind == "member_join" and ev[-1].first is True
        sent = await request(cat, "send", 2, ch="room", ev="local", data=1)
        assert isinstance(sent, f.Ok) and sent.data["recipients"] == 2  # cat and ann, on A
        msg = await pushes_until(ann, lambda fr: isinstance(fr, f.Msg))
        assert msg[-1].event == "local"
        refused = await request(ann, "members", 3, ch="room")
        assert isinstance(refused, f.Err) and refused.code == "broker_unavailable"
        assert isinstance(await request(dan, "leave", 2, ch="room"), f.Ok)  # unseen by node A
        # Redis returns (empty: no persistence): the nodes reconnect and re-publish presence.
        redis_server.start()
        await until(lambda: not a.broker.health() and not b.broker.health(), "reconnection")
        listing = await request(bob, "members", 4, ch="room")
        assert isinstance(listing, f.Ok)
        assert sorted(m["data"] for m in listing.data["members"]) == ["ann", "bob", "cat"]
        # What happened on the other node meanwhile reaches each side: bob hears cat join,
        # ann hears dan leave.
        seen = await pushes_until(bob, member_event("member_join", cat_id(listing)))
        assert seen[-1].member["data"] == "cat"
        gone = await pushes_until(ann, member_event("member_leave", dan_id))
        assert gone[-1].member["data"] == "dan"
        assert isinstance(await request(ann, "send", 5, ch="room", ev="back", data=2), f.Ok)
        msg = await pushes_until(bob, lambda fr: isinstance(fr, f.Msg))
        assert msg[-1].event == "back"


async def test_after_an_outage_a_member_that_never_left_is_updated_not_left_and_joined(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    """Issue 21, item 12: b stays on node B through a Redis outage and changes its profile;
    a member on node A gets member_update for it, never member_leave (whichever node
    reconnects first), while a member that did leave meanwhile (dan, on C) is reported
    leaving: after the presence_ttl that the other nodes get to re-publish their members."""
    options = {"presence_ttl": 1.5, "presence_refresh": 0.5}
    with trio.fail_after(60):
        a, b, c = [
            await start_server(config={"broker": broker(redis_server.url, **options)})
            for _ in range(3)
        ]
        ann = tracked(await client(a, profile="ann"))
        bob = tracked(await client(b, profile={"name": "bob"}))
        dan = tracked(await client(c, profile="dan"))
        for raw in (ann, bob, dan):
            assert isinstance(await request(raw, "join", 1, ch="room", echo=False), f.Ok)
        listing = await request(ann, "members", 2, ch="room")
        ids = {m["data"] if isinstance(m["data"], str) else "bob": m["id"]
               for m in listing.data["members"]}  # fmt: skip
        assert set(ids) == {"ann", "bob", "dan"}
        ann.pushes.clear()  # type: ignore[attr-defined]
        redis_server.stop()  # SIGKILL: Redis comes back empty
        await until(lambda: all(n.broker.health() for n in (a, b, c)), "the nodes to notice")
        assert isinstance(await request(bob, "profile", 3, data={"name": "bob", "away": 1}), f.Ok)
        assert isinstance(await request(dan, "leave", 4, ch="room"), f.Ok)
        redis_server.start()
        seen = await pushes_until(ann, member_event("member_leave", ids["dan"]))
        about_bob = [
            fr for fr in seen if isinstance(fr, f.MemberEvent) and fr.member["id"] == ids["bob"]
        ]
        assert [fr.kind for fr in about_bob] == ["member_update"], about_bob
        assert about_bob[0].member["data"] == {"name": "bob", "away": 1}
        listing = await request(ann, "members", 5, ch="room")
        assert sorted(m["id"] for m in listing.data["members"]) == sorted([ids["ann"], ids["bob"]])


async def test_while_redis_is_away_a_history_send_is_acknowledged_without_a_position(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    """protocol.md §4.8 (and docs/scaling.md): delivered on the node alone, and the ok and the
    msg carry no epoch or offset, since Redis numbers the stream."""
    feed = AppConfig("default", channels=(ChannelRule("feed*", history_size=10),))
    with trio.fail_after(60):
        (node,) = await nodes(start_server, redis_server.url, n=1, apps=(feed,))
        ann = tracked(await client(node, echo=True))
        joined = await request(ann, "join", 1, ch="feed")
        assert isinstance(joined, f.Ok) and "epoch" in joined.data
        sent = await request(ann, "send", 2, ch="feed", ev="e", data=1)
        assert isinstance(sent, f.Ok) and {"epoch", "offset"} <= set(sent.data)
        redis_server.stop()
        await until(lambda: node.broker.health() is not None, "the node to notice")
        sent = await request(ann, "send", 3, ch="feed", ev="e", data=2)
        assert isinstance(sent, f.Ok) and sent.data["recipients"] == 1
        assert "epoch" not in sent.data and "offset" not in sent.data
        (msg,) = [p for p in ann.pushes if isinstance(p, f.Msg) and p.data == 2]  # type: ignore[attr-defined]
        assert (msg.epoch, msg.offset) == (None, None)


def cat_id(listing: Any) -> str:
    return next(m["id"] for m in listing.data["members"] if m["data"] == "cat")


def node_config(redis_url: str, broker_lines: str, app_lines: str) -> str:
    """The TOML of a node in its own process (tests/integration/child_server.py): loopback,
    free ports, this Redis, one app "default"."""
    return f"""
[server]
host = "127.0.0.1"
port = 0
api_port = 0
[broker]
kind = "redis"
url = "{redis_url}"
{broker_lines}
[[apps]]
name = "default"
{app_lines}
"""


async def test_a_killed_nodes_members_leave_within_the_bound(
    start_server: StartServer, redis_url: str, tmp_path: Path
) -> None:
    ttl, refresh = 1.0, 0.25
    options = {"presence_ttl": ttl, "presence_refresh": refresh}
    config = node_config(
        redis_url,
        f"presence_ttl = {ttl}\npresence_refresh = {refresh}",
        f'[apps.session]\nsecret = "{SECRET}"',
    )
    with trio.fail_after(60):
        survivor = await start_server(
            apps=(SIGNED,), config={"broker": broker(redis_url, **options)}
        )
        watcher = tracked(await client(survivor))
        assert isinstance(await request(watcher, "join", 1, ch="room", echo=False), f.Ok)
        alice_here = tracked(await client(survivor, token=token("alice")))
        assert isinstance(await request(alice_here, "join", 1, ch="room"), f.Ok)
        async with child_server(tmp_path, config, 1024) as doomed:
            held = []
            for hello in ({"token": token("alice")}, {"profile": "anon"}):
                raw = await RawClient.connect(doomed.ws)
                assert isinstance(await raw.hello(**hello), f.Welcome)
                held.append(tracked(raw))
                assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
            for _ in held:
                ev = await pushes_until(
                    watcher, lambda fr: isinstance(fr, f.MemberEvent) and fr.kind == "member_join"
                )
            doomed.proc.kill()  # SIGKILL: no leave is ever sent by it
            await doomed.proc.wait()
            with trio.fail_after(ttl + refresh + 2.0):  # the documented bound, and slack
                lasts = {}
                while len(lasts) < 2:
                    ev = await pushes_until(
                        watcher,
                        lambda fr: isinstance(fr, f.MemberEvent) and fr.kind == "member_leave",
                    )
                    lasts[ev[-1].member["user"]] = ev[-1].last
        assert lasts == {"alice": False, None: True}  # alice is still here, on the survivor
        listing = await request(watcher, "members", 2, ch="room")
        assert {m["id"] for m in listing.data["members"]} == {
            alice_here_id(listing),
            watcher_id(listing),
        }


def alice_here_id(listing: Any) -> str:
    return next(m["id"] for m in listing.data["members"] if m["user"] == "alice")


def watcher_id(listing: Any) -> str:
    return next(m["id"] for m in listing.data["members"] if m["user"] is None)


async def test_a_users_rate_limit_is_shared_by_its_connections_on_every_node(
    start_server: StartServer, redis_url: str
) -> None:
    app = attrs.evolve(
        SIGNED,
        rate_limits=(
            Rule("per-user", 3, 60.0, scope="client", operations=frozenset({"send"})),
            Rule("per-conn", 100, 60.0, scope="connection", operations=frozenset({"send"})),
        ),
    )
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(app,))
        on_a = tracked(await client(a, token=token("alice")))
        on_b = tracked(await client(b, token=token("alice")))
        bob = tracked(await client(b, token=token("bob")))
        for raw in (on_a, on_b, bob):
            assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
        replies = [
            await request(raw, "send", i, ch="room", ev="e")
            for i, raw in enumerate((on_a, on_b, on_a, on_b), start=10)
        ]
        assert [type(r) for r in replies] == [f.Ok, f.Ok, f.Ok, f.Err]
        refused = replies[-1]
        assert refused.code == "rate_limited" and refused.limiter == "per-user"
        assert 0 < refused.retry_after <= 20_000  # ms: one token back at 3 per minute
        assert isinstance(await request(bob, "send", 2, ch="room", ev="e"), f.Ok)  # his own


async def test_on_a_redis_cluster_channels_spread_over_shards_and_still_meet(
    start_server: StartServer,
) -> None:
    with redis_cluster() as shards, trio.fail_after(40):
        url = shards[0].url  # any node of the cluster
        a, b = [await start_server(config={"broker": broker(url, cluster=True)}) for _ in range(2)]
        ann = tracked(await client(a, profile="ann"))
        bob = tracked(await client(b, profile="bob"))
        channels = [f"room-{i}" for i in range(12)]  # hash tags over all three shards
        for ch in channels:
            for raw in (ann, bob):
                assert isinstance(await request(raw, "join", 1, ch=ch, echo=False), f.Ok)
        for i, ch in enumerate(channels):
            listing = await request(ann, "members", 2, ch=ch)
            assert [m["data"] for m in listing.data["members"]] == ["ann", "bob"]
            assert isinstance(await request(bob, "send", 3, ch=ch, ev="m", data=i), f.Ok)
            got = await pushes_until(ann, lambda fr: isinstance(fr, f.Msg))
            assert (got[-1].channel, got[-1].data) == (ch, i)
        assert isinstance(await request(bob, "broadcast", 4, ev="all", data="x"), f.Ok)
        got = await pushes_until(ann, lambda fr: isinstance(fr, f.Msg))
        assert (got[-1].channel, got[-1].event) == (None, "all")
        assert isinstance(await request(bob, "leave", 5, ch=channels[0]), f.Ok)
        left = await pushes_until(ann, member_event("member_leave", bob_id(listing)))
        assert left[-1].channel == channels[0]


def bob_id(listing: Any) -> str:
    return next(m["id"] for m in listing.data["members"] if m["data"] == "bob")


HISTORY = AppConfig(
    "default",
    channels=(ChannelRule("feed*", history_size=1000, history_ttl=300.0),),
    server_secret=SERVER_SECRET,
)


async def read_msgs(raw: RawClient, count: int) -> list[f.Msg]:
    got: list[f.Msg] = []
    while len(got) < count:
        frame = await next_push(raw)
        if isinstance(frame, f.Msg):
            got.append(frame)
    return got


def command_calls(redis: RedisProcess, command: str) -> int:
    """How many times Redis ran ``command`` (scripts' calls included): INFO commandstats."""
    stats = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "INFO", "commandstats"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    found = re.search(rf"^cmdstat_{command}:calls=(\d+)", stats, re.M)
    return int(found.group(1)) if found else 0


async def test_history_channels_get_one_order_of_offsets_on_every_node(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    redis_url = redis_server.url
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(HISTORY,))
        on_a = tracked(await client(a))
        on_b = tracked(await client(b))
        tops = []
        for raw in (on_a, on_b):
            ok = await request(raw, "join", 1, ch="feed", echo=False)
            assert isinstance(ok, f.Ok) and ok.data["offset"] == 0
            tops.append(ok.data["epoch"])
        assert tops[0] == tops[1]  # one stream, whichever node read it first
        xadds = command_calls(redis_server, "xadd")
        for i in range(10):  # both nodes publish, interleaved
            assert isinstance(
                await request((on_a, on_b)[i % 2], "send", 10 + i, ch="feed", ev="e", data=i), f.Ok
            )
        assert command_calls(redis_server, "xadd") - xadds == 10  # one per message, not
        # per subscriber or node
        for raw in (on_a, on_b):
            got = await read_msgs(raw, 5)  # the other node's five (echo is off)
            offsets = [m.offset for m in got]
            assert offsets == sorted(offsets) and all(m.epoch == tops[0] for m in got)
        page1 = await request(on_b, "history", 30, ch="feed", limit=4)
        assert isinstance(page1, f.Ok), page1
        assert [m["data"] for m in page1.data["messages"]] == [0, 1, 2, 3]
        assert [m["offset"] for m in page1.data["messages"]] == [1, 2, 3, 4]
        rest = await request(on_a, "history", 31, ch="feed", since=page1.data["next"])
        assert [m["offset"] for m in rest.data["messages"]] == list(range(5, 11))
        async with AsyncServerAPI(api_url(b), "default", SERVER_SECRET) as backend:
            newest = await backend.history("feed", limit=2, reverse=True)
        assert [m["data"] for m in newest["messages"]] == [9, 8]


def history_node_config(redis_url: str) -> str:
    """A node like HISTORY's, as a TOML file for a node in its own process."""
    return node_config(redis_url, "", '[[apps.channels]]\npattern = "feed*"\nhistory_size = 1000')


async def moved_and_recovered(received: list[f.Msg], other: Server, total: int) -> list[f.Msg]:
    """Reconnect to ``other`` with the last position and read the rest of ``total``."""
    last = received[-1]
    again = tracked(await client(other))
    recover = {"epoch": last.epoch, "offset": last.offset}
    ok = await request(again, "join", 2, ch="feed", recover=recover)
    assert isinstance(ok, f.Ok) and ok.data["recovered"] is True, ok
    received += [m for m in again.pushes if isinstance(m, f.Msg)]
    again.pushes.clear()
    return received + await read_msgs(again, total - len(received))


async def test_the_drill_sigterm_a_node_and_its_clients_lose_nothing_on_another(
    start_server: StartServer, redis_url: str, tmp_path: Path
) -> None:
    """Node A, its own process, gets SIGTERM during a steady stream: it tells its client to
    go elsewhere (1001); reconnected to node B with its position, the client misses
    nothing and gets nothing twice."""
    total = 400
    with trio.fail_after(60):
        b = await start_server(apps=(HISTORY,), config={"broker": broker(redis_url)})
        async with child_server(tmp_path, history_node_config(redis_url), 1024) as a:
            raw = await RawClient.connect(a.ws)
            assert isinstance(await raw.hello(), f.Welcome)
            tracked(raw)
            assert isinstance(await request(raw, "join", 1, ch="feed"), f.Ok)
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for i in range(total):
                        b.send("default", "feed", "tick", i)
                        await trio.sleep(0.002)

                nursery.start_soon(publish)
                received: list[f.Msg] = await read_msgs(raw, 100)
                a.proc.send_signal(signal.SIGTERM)  # the drain
                try:
                    while True:
                        frame = await next_push(raw)
                        if isinstance(frame, f.Msg):
                            received.append(frame)
                except Closed as closed:
                    assert closed.code == CloseCode.GOING_AWAY
                    assert "reconnect" in closed.reason
                received = await moved_and_recovered(received, b, total)
            assert await a.proc.wait() == 0
    assert [m.data for m in received] == list(range(total))  # all, once, in order
    assert [m.offset for m in received] == list(range(1, total + 1))


async def test_a_client_dropped_for_two_seconds_recovers_on_another_node(
    start_server: StartServer, redis_url: str
) -> None:
    """An abrupt TCP drop (no close frame) while 1,000 messages are published on another
    node; back after 2 s, on a third node: every message exactly once, in order."""
    total = 1000
    with trio.fail_after(60):
        a, b, c = await nodes(start_server, redis_url, n=3, apps=(HISTORY,))
        raw = tracked(await client(a))
        assert isinstance(await request(raw, "join", 1, ch="feed"), f.Ok)
        for i in range(10):
            b.send("default", "feed", "tick", i)
        received = await read_msgs(raw, 10)
        raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await raw.stream.aclose()  # RST: the node sees the peer vanish
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                for i in range(10, total):
                    b.send("default", "feed", "tick", i)
                    await trio.sleep(0.002)  # ~2 s of publishing

            nursery.start_soon(publish)
            await trio.sleep(2.0)
        received = await moved_and_recovered(received, c, total)
    assert [m.data for m in received] == list(range(total))
    assert [m.offset for m in received] == list(range(1, total + 1))


async def test_beyond_the_streams_window_the_client_is_told_it_did_not_recover(
    start_server: StartServer, redis_url: str
) -> None:
    app = attrs.evolve(HISTORY, channels=(ChannelRule("feed*", history_size=5),))
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(app,))
        raw = tracked(await client(a))
        ok = await request(raw, "join", 1, ch="feed")
        position = {"epoch": ok.data["epoch"], "offset": ok.data["offset"]}
        for i in range(300):  # far beyond 5 (MAXLEN ~ trims in whole nodes of the stream)
            b.send("default", "feed", "e", i)
        again = tracked(await client(b))
        late = await request(again, "join", 2, ch="feed", recover=position)
        assert isinstance(late, f.Ok)
        assert (late.data["recovered"], late.data["reason"]) == (False, "gap_too_old")
        assert late.data["offset"] == 300
        other = await request(again, "join", 3, ch="feed-2", recover={"epoch": "nope", "offset": 3})
        assert (other.data["recovered"], other.data["reason"]) == (False, "epoch_changed")


def kill_subscriber(redis: RedisProcess, node: str) -> None:
    """Cut one node's pub/sub connection (a network blip between it and Redis): Redis goes
    on serving the other nodes."""
    listing = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "CLIENT", "LIST", "TYPE", "pubsub"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    ids = [
        fields["id"]
        for line in listing.splitlines()
        if (fields := dict(kv.split("=", 1) for kv in line.split() if "=" in kv)).get("name")
        == f"rtcore-{node}"
    ]
    assert ids, listing
    for client_id in ids:
        subprocess.run(
            ["redis-cli", "-p", str(redis.port), "CLIENT", "KILL", "ID", client_id],
            capture_output=True, timeout=10, check=True,
        )  # fmt: skip


async def test_what_a_node_missed_while_cut_off_reaches_its_members_in_order_once(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    with trio.fail_after(60):
        a, b = await nodes(start_server, redis_server.url, n=2, apps=(HISTORY,))
        raw = tracked(await client(a))
        assert isinstance(await request(raw, "join", 1, ch="feed"), f.Ok)
        total = 300
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                for i in range(total):
                    b.send("default", "feed", "tick", i)
                    if i == 100:
                        kill_subscriber(redis_server, a.node)
                    await trio.sleep(0.002)

            nursery.start_soon(publish)
            received = await read_msgs(raw, total)
        assert a.redis is not None and a.redis.statistics.reconnects == 1  # it was cut off
        assert [m.data for m in received] == list(range(total))  # all, once, in order
        assert [m.offset for m in received] == list(range(1, total + 1))


async def test_the_python_client_moved_to_another_node_recovers_everything(
    start_server: StartServer, redis_url: str, nursery: trio.Nursery
) -> None:
    """The client library behind a load balancer (a proxy): its connection to node A is cut
    (RST) and the balancer sends it to node B; it rejoins with its position, recovered."""
    a, b = await nodes(start_server, redis_url, n=2, apps=(HISTORY,))
    proxy = Proxy(a.addresses[0])
    await nursery.start(proxy.serve)
    with trio.fail_after(60):
        async with open_client(proxy.url(), backoff_initial=0.05, backoff_max=0.5) as lib:
            got = Received(lib)
            await lib.join("feed")
            await publish(b, 0, 100)
            await wait_until(lambda: len(got.data) == 100)
            proxy.refusing = True
            proxy.cut()
            await publish(b, 100, 300)  # published while the client is away
            proxy.target = b.addresses[0]
            proxy.refusing = False
            await wait_until(lambda: got.recoveries)
            await publish(b, 400, 100)
            await wait_until(lambda: len(got.data) >= 500)
            assert got.data == list(range(500))  # every message once, in order
            assert [(r.channel, r.recovered) for r in got.recoveries] == [("feed", True)]


async def test_foreign_bytes_on_a_redis_channel_are_skipped_and_the_node_serves_on(
    start_server: StartServer, redis_server: RedisProcess
) -> None:
    """Not an envelope, and a control operation this node does not know (a newer node's):
    each is logged and counted, nothing crashes, the next message is delivered."""
    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_server.url, n=2)
        raw = tracked(await client(a))
        assert isinstance(await request(raw, "join", 1, ch="room"), f.Ok)
        channel = Keys("rtcore").app_pubsub("default").decode()
        for payload in (b"not msgpack \xc1", rp.control("other-node", "teleport", ["x"])):
            await trio.run_process(
                ["redis-cli", "-p", str(redis_server.port), "-x", "PUBLISH", channel],
                stdin=payload,
                capture_stdout=True,
            )
        assert a.redis is not None
        await until(lambda: a.redis is not None and a.redis.statistics.bad_envelopes == 2, "both")
        b.send("default", "room", "after", 1)
        got = await pushes_until(raw, lambda fr: isinstance(fr, f.Msg))
        assert got[-1].event == "after" and a.broker.health() is None


async def test_a_channel_tokens_info_is_the_same_on_every_node(
    start_server: StartServer, redis_url: str
) -> None:
    """protocol.md §4.4.2: a member's ``info`` in a channel crosses nodes with its presence
    (join, update, leave, listings); its grant stays with the node that checked it."""
    secret = "r" * 32
    app = AppConfig(
        "a",
        session=SessionSettings(key=secret),
        channels=(ChannelRule("room:*", join="token", presence="anyone"),),
    )

    def room(user: str, info: Any) -> str:
        claims = {"sub": user, "channel": "room:1", "exp": 4_000_000_000, "info": info}
        return jwt.encode(claims, secret, "HS256")

    def signed(user: str) -> str:
        return jwt.encode({"sub": user, "exp": 4_000_000_000}, secret, "HS256")

    with trio.fail_after(30):
        a, b = await nodes(start_server, redis_url, n=2, apps=(app,))
        watcher = tracked(await client(b, app="a", token=signed("bob")))
        ok = await request(watcher, "join", 1, ch="room:1", token=room("bob", None))
        assert isinstance(ok, f.Ok), ok
        ann = tracked(await client(a, app="a", token=signed("ann"), profile={"n": 1}))
        ok = await request(ann, "join", 1, ch="room:1", token=room("ann", {"role": "host"}))
        assert isinstance(ok, f.Ok), ok
        ev = await pushes_until(
            watcher, lambda fr: isinstance(fr, f.MemberEvent) and fr.member["user"] == "ann"
        )
        assert ev[-1].member["info"] == {"role": "host"} and ev[-1].member["data"] == {"n": 1}
        for raw, rid in ((watcher, 2), (ann, 2)):  # listed alike from either node
            page = await request(raw, "members", rid, ch="room:1")
            infos = {m["user"]: m.get("info", "absent") for m in page.data["members"]}
            assert infos == {"bob": "absent", "ann": {"role": "host"}}
        assert isinstance(await request(ann, "profile", 3, data={"n": 2}), f.Ok)
        ev = await pushes_until(
            watcher, member_event("member_update", ann_id := ev[-1].member["id"])
        )
        assert ev[-1].member["info"] == {"role": "host"} and ev[-1].member["data"] == {"n": 2}
        assert isinstance(await request(ann, "leave", 4, ch="room:1"), f.Ok)
        ev = await pushes_until(watcher, member_event("member_leave", ann_id))
        assert ev[-1].member["info"] == {"role": "host"}
