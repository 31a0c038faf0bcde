"""Per-IP admission and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from rtcore.config import Limits
from rtcore.core.limits import admission
from rtcore.core.limits.admission import Admission, client_address, within
from rtcore.protocol import CloseCode

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("203.0.113.5", ["198.51.100.7"], "203.0.113.5"),  # not a proxy: header ignored
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.7"], "198.51.100.7"),  # 1.2.3.4: client-written
        ("10.0.0.2", ["198.51.100.7, 10.0.0.9"], "198.51.100.7"),  # two proxies
        ("10.0.0.2", ["198.51.100.7", "10.0.0.9"], "198.51.100.7"),  # two header lines
        ("10.0.0.2", ["10.0.0.8, 10.0.0.9"], "10.0.0.8"),  # all proxies: the leftmost
        ("10.0.0.2", ["garbage, 198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["198.51.100.7, garbage"], "10.0.0.2"),  # stops at a bad entry
        ("10.0.0.2", [], "10.0.0.2"),
        ("::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_address(peer: str, headers: list[str], client: str) -> None:
    assert client_address(peer, headers, PROXIES) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("10.0.0.2", ["198.51.100.7"], ()) == "10.0.0.2"


def test_admission_caps_and_rate() -> None:
    admission = Admission(
        Limits(max_connections_per_ip=2, connect_rate_per_ip=1.0, connect_burst_per_ip=3)
    )
    assert admission.admit("a", 0.0) is None
    assert admission.admit("a", 0.0) is None
    assert admission.admit("a", 0.0).code == CloseCode.TOO_MANY_CONNECTIONS  # type: ignore[union-attr]
    assert admission.admit("b", 0.0) is None  # per IP
    admission.release("a")
    assert admission.admit("a", 0.0) is None  # the third token of the burst
    admission.release("a")
    assert admission.admit("a", 0.0).code == CloseCode.CONNECTION_RATE_LIMITED  # type: ignore[union-attr]
    assert admission.admit("a", 1.0) is None  # refilled one
    for _ in range(3):
        admission.release("a")
    assert "a" not in admission.counts


def test_within_a_network() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert within("10.1.2.3", nets) and within("::1", nets)
    assert not within("11.0.0.1", nets)
    assert not within("not an address", nets)


def test_within_no_networks_is_false_without_parsing_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default (no trusted proxies) is checked for every accepted connection: no parse."""

    def parse(address: str) -> Any:
        raise AssertionError(f"parsed {address}")

    monkeypatch.setattr(admission.ipaddress, "ip_address", parse)
    assert not within("10.1.2.3", ())
