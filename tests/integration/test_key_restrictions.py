"""API key restrictions over real sockets (protocol.md §3.4 step 2, §7): allowed origins (exact,
wildcard, missing), allowed addresses (direct, and forwarded by a trusted proxy), keys that
may not open realtime connections; each refusal with its close code, and counted."""

from __future__ import annotations

import ipaddress

import attrs
import trio

from rtcore import CloseCode, Server
from rtcore.config import AppConfig
from rtcore.core.auth import ApiKey
from rtcore.core.restrictions import origin_pattern
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer
from tests.integration.raw import Closed, RawClient
from tests.integration.test_observe import scrape, value

KEYS = (
    ApiKey("exact", allowed_origins=(origin_pattern("https://app.example.com"),)),
    ApiKey("wild", allowed_origins=(origin_pattern("*.example.com"),)),
    ApiKey("local", allowed_ips=(ipaddress.ip_network("127.0.0.1"),)),
    ApiKey("office", allowed_ips=(ipaddress.ip_network("10.0.0.0/8"),)),
    ApiKey("server-only", realtime=False),
)
APP = AppConfig("default", api_keys=KEYS, api_key_required=True)


async def hello(
    server: Server, key: str, *, origin: str | None = None, forwarded: str | None = None
) -> int | None:
    """The close code the hello got (None: welcomed)."""
    headers = [] if origin is None else [(b"Origin", origin.encode())]
    if forwarded is not None:
        headers.append((b"X-Forwarded-For", forwarded.encode()))
    raw = await RawClient.connect(server.addresses[0], headers=headers)
    try:
        reply = await raw.hello(key=key)
    except Closed as closed:
        return closed.code
    assert isinstance(reply, f.Welcome), reply
    await raw.close()
    return None


async def test_allowed_origins_exact_wildcard_and_missing(start_server: StartServer) -> None:
    with trio.fail_after(10):
        server = await start_server(apps=(APP,))
        assert await hello(server, "exact", origin="https://app.example.com") is None
        assert await hello(server, "exact", origin="https://evil.example.com") == 4019
        assert await hello(server, "exact", origin="http://app.example.com") == 4019
        assert await hello(server, "exact") == CloseCode.ORIGIN_MISSING == 4022
        assert await hello(server, "wild", origin="https://chat.example.com") is None
        assert await hello(server, "wild", origin="https://a.b.example.com") is None
        assert await hello(server, "wild", origin="https://example.com") == 4019
        assert await hello(server, "wild", origin="https://example.com.evil.org") == 4019
        samples = await scrape(server)
        metric = "rtcore_key_refusals_total"
        assert value(samples, metric, app="default", reason="origin_not_allowed") == 4
        assert value(samples, metric, app="default", reason="origin_missing") == 1


async def test_allowed_ips_direct_and_through_a_trusted_proxy(start_server: StartServer) -> None:
    with trio.fail_after(10):
        direct = await start_server(apps=(APP,))
        assert await hello(direct, "local") is None  # the test connects from 127.0.0.1
        assert await hello(direct, "office") == CloseCode.IP_NOT_ALLOWED == 4021
        # Not behind a trusted proxy: X-Forwarded-For is the client's word, ignored.
        assert await hello(direct, "office", forwarded="10.1.2.3") == 4021
        loopback = (ipaddress.ip_network("127.0.0.0/8"),)
        proxied = await start_server(apps=(APP,), config={"trusted_proxies": loopback})
        assert await hello(proxied, "office", forwarded="10.1.2.3") is None
        assert await hello(proxied, "office", forwarded="192.0.2.1") == 4021
        # Read from the right: what the client wrote further left is not believed.
        assert await hello(proxied, "office", forwarded="10.1.2.3, 192.0.2.1") == 4021
        assert await hello(proxied, "local", forwarded="192.0.2.1") == 4021
        assert direct.apps["default"].statistics.key_refusals == {"ip_not_allowed": 2}


async def test_a_key_that_may_not_open_realtime_connections(start_server: StartServer) -> None:
    with trio.fail_after(10):
        server = await start_server(apps=(APP,))
        assert await hello(server, "server-only") == CloseCode.KEY_NOT_REALTIME == 4018
        # A wrong key is still told it is wrong first (§3.4's order).
        assert await hello(server, "nope") == CloseCode.API_KEY_INVALID
        assert server.apps["default"].statistics.key_refusals == {"key_not_realtime": 1}


async def test_a_reload_that_restricts_a_key_closes_its_connections(
    start_server: StartServer,
) -> None:
    with trio.fail_after(10):
        open_key = AppConfig("default", api_keys=(ApiKey("k"),), api_key_required=True)
        server = await start_server(apps=(open_key,))
        raw = await RawClient.connect(server.addresses[0])
        assert isinstance(await raw.hello(key="k"), f.Welcome)
        narrowed = ApiKey("k", allowed_ips=(ipaddress.ip_network("10.0.0.0/8"),))
        apps = (AppConfig("default", api_keys=(narrowed,), api_key_required=True),)
        server.reload(attrs.evolve(server.config, apps=apps))
        assert (await raw.closed()).code == CloseCode.IP_NOT_ALLOWED
