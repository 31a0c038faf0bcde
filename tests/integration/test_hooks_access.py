"""Where hooks meet the channel permissions (protocol.md §3.4, §4.1, §5.7; docs/hooks.md), over
real sockets against a real HTTP backend: a connect hook's grants enforced by ``granted``
rules, its user satisfying ``session_required`` and getting the user's server-side channels,
the presence of ``join = "hook"`` channels (the members'), and a refresh that keeps a
hook-decided channel without asking again."""

from __future__ import annotations

from typing import Any

import jwt
import trio

from rtcore import CloseCode, Server
from rtcore.config import AppConfig, ChannelRule
from rtcore.config.hook_settings import HooksConfig
from rtcore.core.auth import SessionSettings
from tests.integration.conftest import StartServer
from tests.integration.hookbackend import SECRET, Backend, Reply, ok
from tests.integration.raw import RawClient
from tests.integration.test_hooks import backend, connect, recv, request, view

__all__ = ["backend"]  # (the fixture, shared with test_hooks)

TOKEN_KEY = "t" * 32


def app_with(backend: Backend, *rules: ChannelRule, **settings: Any) -> AppConfig:
    hooks = HooksConfig(
        secret=SECRET,
        connect_url=f"{backend.url}/connect",
        join_url=f"{backend.url}/join",
    )
    return AppConfig("a", channels=rules, hooks=hooks, **settings)


def from_cookie(path: str, body: Any) -> Reply:
    """A connect hook that signs in the user its ``user`` cookie names, with the grants its
    ``grants`` cookie lists (``chan:op+op,chan:op``); anonymous without the cookie."""
    user = body["cookies"].get("user")
    if user is None:
        return ok({"allow": True})
    grants: dict[str, list[str]] = {}
    for item in filter(None, body["cookies"].get("grants", "").split(",")):
        channel, _, ops = item.partition(":")
        grants[channel] = ops.split("+")
    return ok({"allow": True, "user": user, "grants": grants})


async def cookie_client(server: Server, cookie: str | None, **hello: Any) -> RawClient:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return await RawClient.connect(server.addresses[0], headers=headers)


async def welcomed(server: Server, cookie: str | None, **hello: Any) -> RawClient:
    raw = await cookie_client(server, cookie)
    welcome = view(await raw.hello(**hello))
    assert welcome["t"] == "welcome", welcome
    return raw


async def test_a_connect_hooks_grants_admit_granted_joins_and_refuse_others(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/connect"] = from_cookie
    rules = (ChannelRule("team-*", join="granted", send="granted"),)
    server = await start_server(apps=(app_with(backend, *rules),))
    with trio.fail_after(10):
        raw = await welcomed(server, "user=alice; grants=team-red:join+send")
        joined = await request(raw, t="join", id=1, ch="team-red")
        assert joined["t"] == "ok" and joined["data"]["joined"] is True, joined
        sent = await request(raw, t="send", id=2, ch="team-red", ev="e", data=1)
        assert sent["t"] == "ok", sent
        refused = await request(raw, t="join", id=3, ch="team-blue")
        assert (refused["t"], refused["code"]) == ("err", "forbidden"), refused
        assert "grants 'join'" in refused["msg"]
        # the same rules without the hook's grants: refused
        bare = await welcomed(server, "user=bob")
        refused = await request(bare, t="join", id=1, ch="team-red")
        assert (refused["t"], refused["code"]) == ("err", "forbidden"), refused


async def test_session_required_is_met_by_the_connect_hooks_user(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/connect"] = from_cookie
    server = await start_server(apps=(app_with(backend, session_required=True),))
    with trio.fail_after(10):
        raw = await cookie_client(server, "user=carol")
        welcome = view(await raw.hello())
        assert (welcome["t"], welcome["user"]) == ("welcome", "carol")
        # the hook let an anonymous hello through: the app requires a user, still
        anonymous = await cookie_client(server, None)
        await anonymous.send(t="hello", v=1)
        closed = await anonymous.closed()
        assert closed.code == CloseCode.SESSION_MISSING, closed
        assert len(backend.bodies("/connect")) == 2  # both asked: the hook decides first


async def test_a_connect_hooks_user_is_put_back_in_its_server_side_channels(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/connect"] = from_cookie
    app = app_with(
        backend, ChannelRule("room:*", join="nobody"), session=SessionSettings(key=TOKEN_KEY)
    )
    server = await start_server(apps=(app,))
    with trio.fail_after(10):
        server.add_member("a", "room:1", user="dave")  # remembered for dave's hellos
        token = jwt.encode(
            {"sub": "dave", "exp": 4_000_000_000, "subscribe": ["news"]}, TOKEN_KEY, "HS256"
        )
        # The token names dave, and so does the hook (from the cookie): the token's
        # subscribe claim stands, and the backend's channels for dave follow.
        raw = await cookie_client(server, "user=dave")
        welcome = view(await raw.hello(token=token))
        assert welcome["user"] == "dave"
        pushes = [await next_joined(raw) for _ in range(2)]
        assert [(p["ch"], p["reason"]) for p in pushes] == [
            ("news", "subscribe"),
            ("room:1", "added"),
        ]
        # A hook that names dave from a cookie alone: his server-side channels too.
        cookie_only = await cookie_client(server, "user=dave")
        assert view(await cookie_only.hello())["user"] == "dave"
        pushed = await next_joined(cookie_only)
        assert (pushed["ch"], pushed["reason"]) == ("room:1", "added")
        assert len(server.apps["a"].table.members("room:1")) == 2


async def test_a_hook_channels_presence_is_its_members_and_a_leaver_hears_its_leave(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/connect"] = from_cookie
    backend.routes["/join"] = lambda p, b: ok({"allow": True, "info": {"seat": b["user"]}})
    server = await start_server(apps=(app_with(backend, ChannelRule("team-*", join="hook")),))
    with trio.fail_after(10):
        ann, bob, eve = [await welcomed(server, f"user={u}") for u in ("ann", "bob", "eve")]
        assert (await request(ann, t="join", id=1, ch="team-a"))["t"] == "ok"
        assert (await request(bob, t="join", id=1, ch="team-a"))["t"] == "ok"
        seen = await next_member_event(ann)
        assert (seen["t"], seen["member"]["user"], seen["member"]["info"]) == (
            "member_join",
            "bob",
            {"seat": "bob"},
        )
        listing = await request(bob, t="members", id=2, ch="team-a")
        assert [m["info"] for m in listing["data"]["members"]] == [{"seat": "ann"}, {"seat": "bob"}]
        outside = await request(eve, t="members", id=1, ch="team-a")
        assert (outside["t"], outside["code"]) == ("err", "forbidden"), outside
        assert "is for the channel's members" in outside["msg"]
        # bob leaves with echo: he hears his own leave first, as in any other channel
        await bob.send(t="leave", id=3, ch="team-a", echo=True)
        own = view(await bob.recv())
        assert (own["t"], own["member"]["user"], own["last"]) == ("member_leave", "bob", True)
        assert view(await bob.recv())["t"] == "ok"
        left = await next_member_event(ann)
        assert (left["t"], left["member"]["user"]) == ("member_leave", "bob")
        # ...and, no longer a member, may not list it
        after = await request(bob, t="members", id=4, ch="team-a")
        assert (after["t"], after["code"]) == ("err", "forbidden"), after


async def next_joined(raw: RawClient) -> dict[str, Any]:
    """The next ``joined`` push (presence before it skipped)."""
    for _ in range(100):
        frame = await recv(raw)
        if frame["t"] == "joined":
            return frame
    raise AssertionError("no joined push")


async def next_member_event(raw: RawClient) -> dict[str, Any]:
    for _ in range(100):
        frame = await recv(raw)
        if frame["t"] in ("member_join", "member_leave", "member_update"):
            return frame
    raise AssertionError("no member event")


async def test_a_refresh_keeps_a_hook_decided_channel_without_asking_again(
    start_server: StartServer, backend: Backend
) -> None:
    backend.routes["/join"] = lambda p, b: ok({"allow": True})
    app = AppConfig(
        "a",
        channels=(ChannelRule("team-*", join="hook"),),
        hooks=HooksConfig(secret=SECRET, join_url=f"{backend.url}/join"),
        session=SessionSettings(key=TOKEN_KEY),
    )
    server = await start_server(apps=(app,))

    def token(exp: int) -> str:
        return jwt.encode({"sub": "fay", "exp": exp}, TOKEN_KEY, "HS256")

    with trio.fail_after(10):
        raw = await connect(server, token=token(4_000_000_000))
        assert (await request(raw, t="join", id=1, ch="team-a"))["t"] == "ok"
        refreshed = await request(raw, t="refresh", id=2, token=token(4_000_000_001))
        assert refreshed["t"] == "ok", refreshed
        sent = await request(raw, t="send", id=3, ch="team-a", ev="e", data=1)
        assert sent["t"] == "ok", sent  # still a member
        listing = await request(raw, t="members", id=4, ch="team-a")
        assert [m["user"] for m in listing["data"]["members"]] == ["fay"]
        assert len(backend.bodies("/join")) == 1
