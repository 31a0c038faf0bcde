"""An attacker's tour: every hostile move gets its documented refusal, and a well-behaved
client on the same server is unaffected throughout."""

from __future__ import annotations

import jwt
import pytest
import trio
import trio.testing

from rtcore import CloseCode, Server
from rtcore.client import ConnectionClosedError, RequestError, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import ApiKey, SessionSettings
from rtcore.core.limits.limiter import Rule
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url, virtual_wall
from tests.integration.raw import RawClient

A_SECRET, B_SECRET = "a" * 32, "b" * 32
APP_A = AppConfig(
    "a",
    api_keys=(ApiKey("key-a"), ApiKey("key-a-old", expires=1.0)),
    api_key_required=True,
    session=SessionSettings(key=A_SECRET),
    channels=(ChannelRule("staff-*", join="signed_in"),),
    rate_limits=(
        Rule("joins", 5, 60, operations=frozenset({"join"}), error_message="too many joins"),
    ),
    refusals_before_disconnect=5,
)
APP_B = AppConfig(
    "b", api_keys=(ApiKey("key-b"),), api_key_required=True, session=SessionSettings(key=B_SECRET)
)


def token(secret: str, user: str = "mallory", **claims: object) -> str:
    return jwt.encode(
        {"sub": user, "exp": trio.current_time() * 0 + 4_000_000_000, **claims}, secret, "HS256"
    )


@pytest.fixture
async def two_apps(start_server: StartServer) -> Server:
    return await start_server(apps=(APP_A, APP_B))


async def closed_with(server: Server, **hello: object) -> int:
    raw = await RawClient.connect(server.addresses[0])
    await raw.send(t="hello", v=1, **hello)
    return (await raw.closed()).code


async def test_credentials_are_refused_with_their_codes(two_apps: Server) -> None:
    with trio.fail_after(15):
        async with open_client(url(two_apps), app="b", key="key-b") as victim:
            await victim.join("room")
            cases = [
                ({"app": "a"}, CloseCode.API_KEY_MISSING),
                ({"app": "a", "key": "key-b"}, CloseCode.API_KEY_INVALID),  # another app's key
                ({"app": "a", "key": "key-a-old"}, CloseCode.API_KEY_EXPIRED),
                ({"app": "a", "key": "key-a", "token": token(B_SECRET)}, CloseCode.SESSION_INVALID),
                (
                    {"app": "a", "key": "key-a", "token": token(A_SECRET, exp=1)},
                    CloseCode.SESSION_EXPIRED,
                ),
                (
                    {"app": "a", "key": "key-a", "token": token(A_SECRET)[:-4] + "AAAA"},
                    CloseCode.SESSION_INVALID,
                ),  # tampered signature
                ({"app": "a", "key": "key-a", "profile": "x" * 10_000}, CloseCode.HELLO_EXPECTED),
                ({"app": "../b", "key": "key-b"}, CloseCode.UNKNOWN_APP),
            ]
            for hello, code in cases:
                assert await closed_with(two_apps, **hello) == code, hello
            assert (await victim.send("room", "still-served", 1))["recipients"] == 1


async def test_no_reach_across_apps_whatever_the_names(two_apps: Server) -> None:
    with trio.fail_after(15):
        async with (
            open_client(url(two_apps), app="b", key="key-b") as victim,
            open_client(url(two_apps), app="a", key="key-a") as attacker,
        ):
            await victim.join("room")
            seen = victim.events()
            for name in ("room", "b:room", "b.room", "b/room"):
                await attacker.join(name)
                assert [m["id"] for m in await attacker.get_members(name)] == [attacker.id]
                assert (await attacker.send(name, "x", "leak"))["recipients"] == 1
            assert (await attacker.broadcast("x", "leak", echo=False))["recipients"] == 0
            await victim.send("room", "mine", 1, echo=False)  # a marker after the attempts
            await victim.broadcast("marker", echo=True)
            async for event in seen:
                assert not (isinstance(event, f.Msg) and event.data == "leak")
                if isinstance(event, f.Msg) and event.event == "marker":
                    break
            assert [m["id"] for m in await victim.get_members("room")] == [victim.id]


async def test_join_floods_are_rate_limited_then_disconnected(two_apps: Server) -> None:
    with trio.fail_after(15):
        async with open_client(url(two_apps), app="a", key="key-a") as bystander:
            await bystander.join("lobby")
            raw = await RawClient.connect(two_apps.addresses[0])
            await raw.hello(app="a", key="key-a")
            refused = []
            for i in range(20):
                await raw.send(t="join", id=i, ch=f"flood-{i}", echo=False)
            try:
                while True:
                    frame = await raw.recv()
                    if isinstance(frame, f.Err):
                        refused.append(frame)
            except Exception as exc:  # the close
                assert getattr(exc, "code", None) == CloseCode.RATE_LIMIT_ABUSE
            assert len(refused) == 5
            assert {(e.code, e.limiter, e.message) for e in refused} == {
                ("rate_limited", "joins", "too many joins")
            }
            assert all(0 < (e.retry_after or 0) <= 60_000 for e in refused)
            # the bystander shares the IP but not the connection, and joined earlier
            assert (await bystander.send("lobby", "fine", 1))["recipients"] == 1


async def test_rate_limited_requests_raise_request_error_with_retry_after(two_apps: Server) -> None:
    with trio.fail_after(15):
        async with open_client(
            url(two_apps), app="a", key="key-a", token=token(A_SECRET, user="u-limited")
        ) as c:
            for i in range(5):
                await c.join(f"ch-{i}")
            with pytest.raises(RequestError) as info:
                await c.join("one-too-many")
            assert (info.value.code, info.value.limiter) == ("rate_limited", "joins")
            assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
            # one unit, milliseconds, as on the wire; retry_after is the same in seconds
            assert (
                type(info.value.retry_after_ms) is int and 0 < info.value.retry_after_ms <= 60_000
            )
            assert info.value.retry_after == info.value.retry_after_ms / 1000


async def test_channel_rules_need_a_signed_in_user(two_apps: Server) -> None:
    with trio.fail_after(15):
        async with (
            open_client(url(two_apps), app="a", key="key-a") as anon,
            open_client(url(two_apps), app="a", key="key-a", token=token(A_SECRET, "ann")) as ann,
        ):
            with pytest.raises(RequestError) as info:
                await anon.join("staff-room")
            assert info.value.code == "forbidden"
            assert await ann.join("staff-room")
            assert (await ann.get_members("staff-room"))[0]["user"] == "ann"


async def test_fatal_credential_closes_end_the_client_without_retrying(two_apps: Server) -> None:
    attempts: list[int] = []
    with trio.fail_after(15), pytest.raises(ConnectionClosedError) as info:
        async with open_client(url(two_apps), app="a", key="wrong", backoff_initial=0.01) as c:
            c.on_reconnect_attempt(attempts.append)
    assert info.value.code == CloseCode.API_KEY_INVALID and attempts == []


async def test_origins_are_checked_for_browsers(start_server: StartServer) -> None:
    server = await start_server(config={"allowed_origins": ("https://good.example",)})

    async def upgrade(origin: bytes | None) -> bytes:
        stream = await trio.open_tcp_stream(*server.addresses[0])
        headers = b"Origin: " + origin + b"\r\n" if origin else b""
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + headers
            + b"\r\n"
        )
        response = await stream.receive_some(1000)
        await stream.aclose()
        return response

    with trio.fail_after(10):
        assert (await upgrade(b"https://evil.example")).startswith(b"HTTP/1.1 403")
        assert (await upgrade(b"https://good.example")).startswith(b"HTTP/1.1 101")
        assert (await upgrade(None)).startswith(b"HTTP/1.1 101")  # not a browser


async def test_connection_floods_per_ip(start_server: StartServer) -> None:
    server = await start_server(
        max_connections_per_ip=2, connect_rate_per_ip=0.001, connect_burst_per_ip=2
    )
    with trio.fail_after(10):
        first = await RawClient.connect(server.addresses[0])
        await first.hello()
        second = await RawClient.connect(server.addresses[0])
        await second.hello()
        third = await RawClient.connect(server.addresses[0])
        assert (await third.closed()).code == CloseCode.TOO_MANY_CONNECTIONS
        await second.aclose()
        await trio.sleep(0.1)  # the server notices the close
        # the 4th attempt: the count allows it, but the burst of 2 admitted connections is used
        # up (a connection refused by the count takes no token)
        fourth = await RawClient.connect(server.addresses[0])
        assert (await fourth.closed()).code == CloseCode.CONNECTION_RATE_LIMITED
        await first.send(t="members", id=1, ch="x")
        assert isinstance(await first.recv(), f.Ok)  # the admitted one is served throughout


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    start_server: StartServer,
) -> None:
    import ipaddress

    def behind(ip: str) -> list[tuple[bytes, bytes]]:
        return [(b"x-forwarded-for", ip.encode())]

    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    trusting = await start_server(config={"trusted_proxies": loopback}, max_connections_per_ip=1)
    with trio.fail_after(10):
        one = await RawClient.connect(trusting.addresses[0], headers=behind("198.51.100.1"))
        await one.hello()
        two = await RawClient.connect(trusting.addresses[0], headers=behind("198.51.100.2"))
        assert isinstance(await two.hello(), f.Welcome)  # another client behind the proxy
        again = await RawClient.connect(trusting.addresses[0], headers=behind("198.51.100.1"))
        assert (await again.closed()).code == CloseCode.TOO_MANY_CONNECTIONS
        assert trusting.admission.counts == {"198.51.100.1": 1, "198.51.100.2": 1}

    elsewhere = (ipaddress.ip_network("10.0.0.0/8"),)
    wary = await start_server(config={"trusted_proxies": elsewhere}, max_connections_per_ip=1)
    with trio.fail_after(10):
        first = await RawClient.connect(wary.addresses[0], headers=behind("198.51.100.1"))
        await first.hello()
        spoof = await RawClient.connect(wary.addresses[0], headers=behind("198.51.100.2"))
        assert (await spoof.closed()).code == CloseCode.TOO_MANY_CONNECTIONS  # header ignored


async def test_expired_tokens_end_connections_unless_refreshed(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    app = AppConfig("a", session=SessionSettings(key=A_SECRET, leeway=0, expire_connections=True))
    server = await start_server(apps=(app,), wall=virtual_wall, heartbeat_interval=0.2)
    with trio.fail_after(15):
        short = token(A_SECRET, "u1", exp=virtual_wall() + 1)
        stale = await RawClient.connect(server.addresses[0])
        assert isinstance(await stale.hello(token=short), f.Welcome)
        async with open_client(url(server), token=short) as fresh:
            expires = await fresh.refresh(token(A_SECRET, "u1", exp=virtual_wall() + 60))
            assert expires is not None and expires > virtual_wall() + 50
            assert (await stale.closed()).code == CloseCode.SESSION_EXPIRED
            assert fresh.is_connected()
            assert (await fresh.broadcast("still-here"))["recipients"] == 1
