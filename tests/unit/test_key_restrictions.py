"""API key restrictions (rtcore.core.restrictions, protocol.md §3.4 step 2): origin patterns,
address networks, the order of the checks, and how check-config reports bad entries."""

from __future__ import annotations

import ipaddress
from typing import Any

import msgpack
import pytest

from rtcore.config import ConfigError
from rtcore.config.model import AppConfig
from rtcore.config.reader import Reader
from rtcore.core.auth import ApiKey
from rtcore.core.restrictions import (
    PatternError,
    address_network,
    check_restrictions,
    ip_allowed,
    origin_allowed,
    origin_pattern,
)
from rtcore.protocol import CloseCode
from tests.unit.test_session import MONO, NOW, World


def allowed(origin: str, *patterns: str) -> bool:
    return origin_allowed(origin, [origin_pattern(p) for p in patterns])


@pytest.mark.parametrize(
    ("origin", "patterns", "expected"),
    [
        ("https://app.example.com", ["https://app.example.com"], True),
        ("HTTPS://App.Example.com", ["https://app.example.com"], True),
        ("http://app.example.com", ["https://app.example.com"], False),
        ("https://app.example.com:8443", ["https://app.example.com"], False),
        ("http://localhost:3000", ["http://localhost:3000"], True),
        ("http://localhost:3001", ["http://localhost:3000"], False),
        ("https://a.example.com", ["*.example.com"], True),
        ("http://a.b.example.com", ["*.example.com"], True),
        ("https://example.com", ["*.example.com"], False),
        ("https://badexample.com", ["*.example.com"], False),
        ("https://example.com.evil.net", ["*.example.com"], False),
        ("https://a.example.com", ["https://*.example.com"], True),
        ("http://a.example.com", ["https://*.example.com"], False),
        ("https://a.example.com:444", ["*.example.com:444"], True),
        ("https://a.example.com:444", ["*.example.com"], False),
        ("null", ["https://app.example.com"], False),
        ("*.example.com", ["*.example.com"], False),
        ("https://other.org", ["https://app.example.com", "*.other.org"], False),
        ("https://x.other.org", ["https://app.example.com", "*.other.org"], True),
    ],
)
def test_origin_patterns(origin: str, patterns: list[str], expected: bool) -> None:
    assert allowed(origin, *patterns) is expected


@pytest.mark.parametrize(
    "bad",
    [
        "example.com",
        "*",
        "https://",
        "https://*",
        "ftp//x",
        "https://a.com:0",
        "https://a.com:70000",
        "*.",
        "https://a..com",
    ],
)
def test_a_pattern_that_is_neither_an_origin_nor_a_wildcard_is_refused(bad: str) -> None:
    with pytest.raises(PatternError, match="is not an origin"):
        origin_pattern(bad)


def test_addresses_and_networks() -> None:
    nets = [
        address_network("10.0.0.0/8"),
        address_network("2001:db8::/32"),
        address_network("192.0.2.7"),
    ]
    assert ip_allowed("10.1.2.3", nets)
    assert ip_allowed("192.0.2.7", nets)
    assert not ip_allowed("192.0.2.8", nets)
    assert ip_allowed("2001:db8::1", nets)
    assert not ip_allowed("2001:db9::1", nets)
    assert ip_allowed("::ffff:10.9.9.9", nets)  # an IPv4 client on an IPv6 socket
    assert not ip_allowed("?", nets)  # no usable address: refused
    assert not ip_allowed("", nets)
    with pytest.raises(PatternError, match="not an IP address or a network"):
        address_network("10.0.0.0/33")
    with pytest.raises(PatternError):
        address_network("example.com")


def test_the_checks_come_in_order_and_each_has_its_code() -> None:
    origins = (origin_pattern("https://app.example.com"),)
    nets = (ipaddress.ip_network("10.0.0.0/8"),)

    def code(realtime: bool, origin: str | None, address: str) -> tuple[str, int] | None:
        refused = check_restrictions(realtime, origins, nets, origin, address)
        return None if refused is None else (refused[0], refused[1].code)

    assert code(False, None, "1.2.3.4") == ("key_not_realtime", CloseCode.KEY_NOT_REALTIME)
    assert code(True, None, "1.2.3.4") == ("origin_missing", CloseCode.ORIGIN_MISSING)
    assert code(True, "https://evil.org", "10.0.0.1") == (
        "origin_not_allowed",
        CloseCode.ORIGIN_NOT_ALLOWED,
    )
    assert code(True, "https://app.example.com", "1.2.3.4") == (
        "ip_not_allowed",
        CloseCode.IP_NOT_ALLOWED,
    )
    assert code(True, "https://app.example.com", "10.0.0.1") is None
    # Without restrictions, neither an Origin nor an address is needed.
    assert check_restrictions(True, (), (), None, "?") is None


def read_key(**entries: Any) -> ApiKey:
    raw = {"apps": [{"name": "a", "api_keys": [{"key": "k" * 32, **entries}]}]}
    reader = Reader({}, __import__("pathlib").Path("."))
    config = reader.config(raw)
    if reader.errors:
        raise ConfigError(*reader.errors)
    return config.apps[0].api_keys[0]


def test_check_config_reads_the_restrictions_and_names_every_bad_entry() -> None:
    key = read_key(
        allowed_origins=["https://app.example.com", "*.example.org"],
        allowed_ips=["10.0.0.0/8", "::1"],
        realtime=False,
    )
    assert [p.text for p in key.allowed_origins] == ["https://app.example.com", "*.example.org"]
    assert key.allowed_ips == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert key.realtime is False
    with pytest.raises(ConfigError) as caught:
        read_key(allowed_origins=["app.example.com", "https://ok.com"], allowed_ips=["10.0.0.0/40"])
    assert caught.value.errors == (
        "apps[0].api_keys[0].allowed_origins[0]: 'app.example.com' is not an origin "
        "(https://app.example.com, http://localhost:3000) or a wildcard (*.example.com, "
        "https://*.example.com)",
        "apps[0].api_keys[0].allowed_ips[0]: '10.0.0.0/40' is not an IP address or a network "
        "(192.0.2.0/24, 2001:db8::/32)",
    )
    with pytest.raises(ConfigError, match=r"realtime: must be true or false"):
        read_key(realtime="no")
    with pytest.raises(ConfigError, match=r"allowed_ips: must be an array of strings"):
        read_key(allowed_ips="10.0.0.0/8")


def hello_close(world: World, origin: str | None, remote: str, key: str = "k1") -> int | None:
    from rtcore.core.session.session import Session

    s = Session("c9", world.apps, world.config, world.pending, remote=remote)
    s.origin = origin
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, "key": key}), MONO, NOW)
    return None if close is None else close.code


def test_a_session_checks_its_key_restrictions_and_counts_refusals() -> None:
    key = ApiKey(
        "k1",
        allowed_origins=(origin_pattern("*.example.com"),),
        allowed_ips=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    world = World(
        apps=(
            AppConfig(
                "default", api_keys=(key, ApiKey("k2", realtime=False)), api_key_required=True
            ),
        )
    )
    assert hello_close(world, "https://a.example.com", "10.0.0.1") is None
    assert hello_close(world, None, "10.0.0.1") == CloseCode.ORIGIN_MISSING
    assert hello_close(world, "https://a.example.net", "10.0.0.1") == CloseCode.ORIGIN_NOT_ALLOWED
    assert hello_close(world, "https://a.example.com", "11.0.0.1") == CloseCode.IP_NOT_ALLOWED
    assert hello_close(world, None, "10.0.0.1", key="k2") == CloseCode.KEY_NOT_REALTIME
    # An unknown key is told so before any restriction is looked at.
    assert hello_close(world, None, "11.0.0.1", key="k3") == CloseCode.API_KEY_INVALID
    assert world.apps["default"].statistics.key_refusals == {
        "origin_missing": 1,
        "origin_not_allowed": 1,
        "ip_not_allowed": 1,
        "key_not_realtime": 1,
    }
