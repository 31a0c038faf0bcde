"""Hooks against a real HTTP backend started by the test (tests/integration/hookbackend.py):
allow, deny and rewrite for connect, join and publish; a backend that hangs, fails, answers
garbage or drops the connection; the breaker opening and recovering; other connections
going on while a hook hangs; replies in request order."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import pytest
import trio

from rtcore import CloseCode, Server
from rtcore.client import Connected, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.config.hook_settings import HooksConfig
from tests.integration.conftest import StartServer, url
from tests.integration.hookbackend import SECRET, Backend, Reply, ok
from tests.integration.raw import RawClient


@pytest.fixture
async def backend(nursery: trio.Nursery) -> Backend:
    b = Backend()
    await nursery.start(b.serve)
    return b


def hooked_app(backend: Backend, **settings: Any) -> AppConfig:
    hooks = HooksConfig(
        secret=SECRET,
        connect_url=settings.pop("connect_url", None),
        join_url=f"{backend.url}/join",
        publish_url=f"{backend.url}/publish",
        **settings,
    )
    return AppConfig(
        "a",
        channels=(
            ChannelRule("team-*", join="hook", send="hook"),
            ChannelRule("open-*"),
        ),
        hooks=hooks,
    )


ADMIN = "admin-secret-" + "a" * 24


async def start(start_server: StartServer, backend: Backend, **settings: Any) -> Server:
    return await start_server(
        apps=(hooked_app(backend, **settings),), config={"admin_secret": ADMIN}
    )


async def admin_state(server: Server) -> dict[str, Any]:
    """The settings page's view of app a's hooks and webhooks."""
    host, port = server.api_addresses[0]
    async with httpx.AsyncClient() as http:
        reply = await http.get(
            f"http://{host}:{port}/admin/api/state", headers={"authorization": f"Bearer {ADMIN}"}
        )
    assert reply.status_code == 200, reply.text
    (app,) = [a for a in reply.json()["apps"] if a["name"] == "a"]
    return dict(app["integrations"])


def view(frame: Any) -> dict[str, Any]:
    """A server frame as a dict with its wire names (t, id, code, msg, ev, data, ...)."""
    fields = attrs.asdict(frame, recurse=False)
    fields["t"] = getattr(frame, "TYPE", None) or getattr(frame, "kind", "?")
    for attr, wire in (("message", "msg"), ("event", "ev"), ("channel", "ch")):
        if attr in fields:
            fields[wire] = fields[attr]
    return fields


async def recv(raw: RawClient) -> dict[str, Any]:
    return view(await raw.recv())


async def connect(server: Server, **hello: Any) -> RawClient:
    raw = await RawClient.connect(server.addresses[0])
    welcome = view(await raw.hello(**hello))
    assert welcome["t"] == "welcome", welcome
    return raw


async def request(raw: RawClient, **frame: Any) -> dict[str, Any]:
    await raw.send(**frame)
    for _ in range(1000):
        reply = await recv(raw)
        if reply.get("id") == frame["id"]:
            return reply
    raise AssertionError("no reply")


async def test_join_hook_allows_with_info_denies_with_its_code(
    start_server: StartServer, backend: Backend
) -> None:
    def join(path: str, body: Any) -> Reply:
        if body["channel"] == "team-red":
            return ok({"allow": True, "info": {"role": body["data"]["want"]}})
        return ok({"allow": False, "code": "not_in_team", "message": "ask the captain"})

    backend.routes["/join"] = join
    server = await start(start_server, backend)
    with trio.fail_after(10):
        raw = await connect(server)
        reply = await request(raw, t="join", id=1, ch="team-red", data={"want": "captain"})
        assert reply["t"] == "ok" and reply["data"]["joined"] is True
        listing = await request(raw, t="members", id=2, ch="team-red")
        assert [m.get("info") for m in listing["data"]["members"]] == [{"role": "captain"}]
        denied = await request(raw, t="join", id=3, ch="team-blue")
        assert (denied["t"], denied["code"], denied["msg"]) == (
            "err",
            "not_in_team",
            "ask the captain",
        )
        asked = backend.bodies("/join")
        assert [b["channel"] for b in asked] == ["team-red", "team-blue"]
        assert asked[0]["data"] == {"want": "captain"} and asked[0]["app"] == "a"
        assert all(s.signed for s in backend.seen)
        # a channel its rule does not give to the hook is not asked about
        assert (await request(raw, t="join", id=4, ch="open-1"))["t"] == "ok"
        assert len(backend.bodies("/join")) == 2


async def test_publish_hook_allows_rewrites_and_denies(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/join"] = lambda p, b: ok({"allow": True})

    def publish(path: str, body: Any) -> Reply:
        if body["event"] == "edit":
            return ok({"allow": True, "data": {"text": body["data"]["text"].upper()}})
        if body["event"] == "spam":
            return ok({"allow": False, "code": "spam", "message": "no"})
        return ok({"allow": True})

    backend.routes["/publish"] = publish
    server = await start(start_server, backend)
    with trio.fail_after(10):
        sender, reader = await connect(server), await connect(server)
        for raw in (sender, reader):
            assert (await request(raw, t="join", id=1, ch="team-x"))["t"] == "ok"
        for i, event in enumerate(("plain", "edit", "spam"), start=10):
            reply = await request(
                sender, t="send", id=i, ch="team-x", ev=event, data={"text": "hi"}
            )
            assert reply["t"] == ("err" if event == "spam" else "ok"), reply
        assert reply["code"] == "spam"
        got = []
        while len(got) < 2:
            frame = await recv(reader)
            if frame["t"] == "msg":
                got.append((frame["ev"], frame["data"]))
        assert got == [("plain", {"text": "hi"}), ("edit", {"text": "HI"})]
        assert [b["event"] for b in backend.bodies("/publish")] == ["plain", "edit", "spam"]


async def test_connect_hook_names_the_user_from_a_cookie_or_refuses(
    start_server: StartServer, backend: Backend
) -> None:
    def connect_hook(path: str, body: Any) -> Reply:
        session = body["cookies"].get("session")
        if session == "s-alice":
            return ok(
                {
                    "allow": True,
                    "user": "alice",
                    "profile": {"name": "Alice"},
                    "grants": {"team-*": ["join"]},
                }
            )
        return ok({"allow": False, "code": "no_session", "message": "sign in first"})

    backend.routes["/connect"] = connect_hook
    server = await start(
        start_server, backend, connect_url=f"{backend.url}/connect", headers=("x-tenant",)
    )
    with trio.fail_after(10):
        headers = [(b"cookie", b"session=s-alice; theme=dark"), (b"x-tenant", b"t1")]
        raw = await RawClient.connect(server.addresses[0], headers=headers)
        welcome = view(await raw.hello(data={"device": "phone"}))
        assert welcome["t"] == "welcome" and welcome["user"] == "alice"
        asked = backend.bodies("/connect")[0]
        assert asked["cookies"] == {"session": "s-alice", "theme": "dark"}
        assert asked["headers"] == {"x-tenant": "t1"} and asked["data"] == {"device": "phone"}
        conn = server.connections[welcome["conn"]]
        assert conn.session.principal is not None
        grants = conn.session.principal.grants
        assert grants.count == 1 and grants.ops("team-1") == frozenset({"join"})
        assert conn.session.member is not None and conn.session.member.profile == {"name": "Alice"}

        refused = await RawClient.connect(server.addresses[0])
        await refused.send(t="hello", v=1)
        closed = await refused.closed()
        assert (closed.code, closed.reason) == (
            CloseCode.CONNECT_REFUSED,
            "no_session: sign in first",
        )


@pytest.mark.parametrize("failure", ["hang", "500", "garbage", "drop", "bad_field"])
async def test_a_failing_backend_gets_the_client_hook_unavailable(
    start_server: StartServer,
    backend: Backend,
    autojump_clock: trio.testing.MockClock,
    failure: str,
) -> None:
    forever = trio.Event()
    replies = {
        "hang": Reply(hang=forever),
        "500": Reply(500, b"oops"),
        "garbage": Reply(200, b"<html>not json"),
        "drop": Reply(drop=True),
        "bad_field": ok({"allow": True, "info": {"x": float("inf")}}),
    }
    backend.routes["/join"] = lambda p, b: replies[failure]
    server = await start(start_server, backend)
    with trio.fail_after(30):
        raw = await connect(server)
        started = trio.current_time()
        reply = await request(raw, t="join", id=1, ch="team-a")
        assert (reply["t"], reply["code"]) == ("err", "hook_unavailable"), reply
        if failure == "hang":  # refused at the hook's timeout (2 s), not later
            assert trio.current_time() - started == pytest.approx(2.0, abs=0.1)
        # the connection goes on: a plain join is answered
        assert (await request(raw, t="join", id=2, ch="open-1"))["t"] == "ok"
        assert raw.ws.state.name == "OPEN"
        assert "team-a" not in server.apps["a"].table.channels()


async def test_the_breaker_opens_after_failures_and_recovers(
    start_server: StartServer, backend: Backend, autojump_clock: trio.testing.MockClock
) -> None:
    answer = {"reply": Reply(500, b"down")}
    backend.routes["/join"] = lambda p, b: answer["reply"]
    server = await start(start_server, backend, breaker_failures=3, breaker_open=10.0)
    client = server.integrations.hooks["a"]
    with trio.fail_after(60):
        raw = await connect(server)
        for i in range(3):
            reply = await request(raw, t="join", id=i + 1, ch="team-a")
            assert reply["code"] == "hook_unavailable"
        assert len(backend.seen) == 3 and client.breaker.state(trio.current_time()) == "open"
        reply = await request(raw, t="join", id=10, ch="team-a")
        assert reply["code"] == "hook_unavailable" and "breaker open" in reply["msg"]
        assert len(backend.seen) == 3  # not asked while open
        health = await admin_state(server)
        assert health["hooks"]["breaker"] == "open"
        assert health["hooks"]["outcomes"] == {"join:breaker_open": 1, "join:unavailable": 3}
        assert "HTTP 500" in health["hooks"]["last_failure"]
        text = server.metrics.exposition().decode() if server.metrics else ""
        assert 'rtcore_hook_breaker_state{app="a",state="open"} 1.0' in text
        assert 'rtcore_hook_calls_total{app="a",hook="join",outcome="unavailable"} 3.0' in text
        answer["reply"] = ok({"allow": True})
        await trio.sleep(10.5)  # the breaker's open period passes (virtual time)
        assert client.breaker.state(trio.current_time()) == "half_open"
        reply = await request(raw, t="join", id=11, ch="team-a")
        assert reply["t"] == "ok" and len(backend.seen) == 4
        assert client.breaker.state(trio.current_time()) == "closed"


async def test_other_connections_go_on_while_a_hook_hangs_and_replies_stay_in_order(
    start_server: StartServer, backend: Backend
) -> None:
    release = trio.Event()
    backend.routes["/join"] = lambda p, b: Reply(200, b'{"allow": true}', hang=release)
    server = await start(start_server, backend, timeout=30.0)
    with trio.fail_after(20):
        waiting, other = await connect(server), await connect(server)
        arrived = backend.arrived
        # pipelined: the hooked join, then a plain join behind it on the same connection
        await waiting.send(t="join", id=1, ch="team-a")
        await waiting.send(t="join", id=2, ch="open-2")
        await arrived.wait()  # the hook call is in flight, and hangs
        assert (await request(other, t="join", id=1, ch="open-1"))["t"] == "ok"
        reply = await request(other, t="send", id=2, ch="open-1", ev="e", data=1)
        assert reply["t"] == "ok"
        assert not release.is_set()  # all of that while the hook still hangs
        release.set()
        replies: list[tuple[str, int]] = []
        while len(replies) < 2:
            frame = await recv(waiting)
            if frame["t"] in ("ok", "err"):
                replies.append((frame["t"], frame["id"]))
        assert replies == [("ok", 1), ("ok", 2)]


async def test_join_answers_are_cached_for_join_cache_ttl(
    start_server: StartServer, backend: Backend, autojump_clock: trio.testing.MockClock
) -> None:
    import jwt

    from rtcore.core.auth import SessionSettings

    backend.routes["/join"] = lambda p, b: ok({"allow": False, "code": "nope", "message": "no"})
    settings = hooked_app(backend, join_cache_ttl=5.0)
    key = "k" * 32
    app = AppConfig(
        "a", channels=settings.channels, hooks=settings.hooks, session=SessionSettings(key=key)
    )
    server = await start_server(apps=(app,))
    token = jwt.encode({"sub": "bob", "exp": 4_000_000_000}, key, "HS256")
    with trio.fail_after(30):
        raw = await connect(server, token=token)
        for i in range(3):
            assert (await request(raw, t="join", id=i + 1, ch="team-a"))["code"] == "nope"
        assert len(backend.seen) == 1
        await trio.sleep(6)
        assert (await request(raw, t="join", id=9, ch="team-a"))["code"] == "nope"
        assert len(backend.seen) == 2


async def test_hello_waits_for_the_connect_hook_without_blocking_others(
    start_server: StartServer, backend: Backend
) -> None:
    release = trio.Event()
    backend.routes["/connect"] = lambda p, b: Reply(200, b'{"allow": true}', hang=release)
    server = await start(start_server, backend, connect_url=f"{backend.url}/connect", timeout=30.0)
    with trio.fail_after(20):
        slow = await RawClient.connect(server.addresses[0])
        arrived = backend.arrived
        await slow.send(t="hello", v=1)
        await arrived.wait()
        backend.routes["/connect"] = lambda p, b: ok({"allow": True, "user": "quick"})
        quick = await connect(server)  # welcomed while the first hello still waits
        assert (await request(quick, t="join", id=1, ch="open-1"))["t"] == "ok"
        release.set()
        assert (await recv(slow))["t"] == "welcome"


async def test_connect_hook_unavailable_closes_with_4041(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/connect"] = lambda p, b: Reply(503, b"")
    server = await start(start_server, backend, connect_url=f"{backend.url}/connect")
    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        await raw.send(t="hello", v=1)
        closed = await raw.closed()
        assert closed.code == CloseCode.HOOK_UNAVAILABLE and "HTTP 503" in closed.reason


async def test_the_client_sends_connect_and_join_data_again_after_a_reconnect(
    start_server: StartServer, backend: Backend
) -> None:
    """rtcore.client: ``connect_data`` reaches the connect hook on every connection, a
    join's ``data`` the join hook on the join and on the rejoin after a reconnect."""
    backend.routes["/connect"] = lambda p, b: ok(
        {"allow": True, "user": (b["data"] or {}).get("user")}
    )
    backend.routes["/join"] = lambda p, b: ok({"allow": b["data"] == {"seat": 7}})
    server = await start(start_server, backend, connect_url=f"{backend.url}/connect")
    with trio.fail_after(10):
        async with open_client(
            url(server), app="a", connect_data={"user": "ann"}, backoff_initial=0.01
        ) as c:
            assert await c.join("team-red", data={"seat": 7})
            assert await c.join("open-1")  # no hook: nothing sent, nothing remembered
            events = c.events()
            old = c.id
            assert old is not None
            server.connections[old].request_close(CloseCode.INTERNAL_ERROR, "test: drop")
            async for event in events:
                if isinstance(event, Connected):
                    break
            assert c.id != old and c.channels == {"team-red": None, "open-1": None}
            connects = [(b["data"], b["conn"]) for b in backend.bodies("/connect")]
            assert connects == [({"user": "ann"}, old), ({"user": "ann"}, c.id)]
            joins = [(b["channel"], b["data"], b["conn"]) for b in backend.bodies("/join")]
            assert joins == [("team-red", {"seat": 7}, old), ("team-red", {"seat": 7}, c.id)]
            assert [m["user"] for m in server.members("a", "team-red")] == ["ann"]
