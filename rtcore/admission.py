"""Admission of new connections per IP address: a cap on open connections and a connection
rate (flood protection); and which IP address a connection is from, behind trusted proxies.
Sans-IO: ``now`` (monotonic seconds) is passed in."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable

from rtcore.config import Limits
from rtcore.limiter import Chain, Rule
from rtcore.protocol import CloseCode
from rtcore.session import Close

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Admission:
    """Per-IP open-connection counts and connection-rate buckets."""

    def __init__(self, limits: Limits) -> None:
        self.counts: dict[str, int] = {}
        self.limits = limits
        self._rate = Chain()
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        """New limits (a reload)."""
        self.limits = limits
        self._rate.replace_rules(
            [
                Rule(
                    "connect",
                    limits.connect_rate_per_ip,
                    1.0,
                    float(limits.connect_burst_per_ip),
                    operations=frozenset({"connect"}),
                )
            ]
        )

    def admit(self, ip: str, now: float) -> Close | None:
        """Count a new connection from ``ip``, or say why it must be closed."""
        if self.counts.get(ip, 0) >= self.limits.max_connections_per_ip:
            return Close(
                CloseCode.TOO_MANY_CONNECTIONS,
                f"{self.limits.max_connections_per_ip} connections from {ip} already",
            )
        refusal = self._rate.check("connect", ip, ip, now)
        if refusal is not None:
            return Close(
                CloseCode.CONNECTION_RATE_LIMITED,
                f"too many new connections from {ip}; retry in "
                f"{math.ceil(refusal.retry_after * 1000)} ms",
            )
        self.counts[ip] = self.counts.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """A connection counted by :meth:`admit` ended."""
        left = self.counts.get(ip, 0) - 1
        if left > 0:
            self.counts[ip] = left
        else:
            self.counts.pop(ip, None)

    def sweep(self, now: float) -> None:
        self._rate.sweep(now)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's IP address: the TCP peer, unless the peer is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right (each proxy appends the address it got
    the request from), skipping trusted proxies: the first address that is not one is the
    client. Entries an untrusted hop could have written further left are ignored, so a client
    cannot choose its own address. An unparsable entry stops the walk at the last good one.
    """
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not _within(hop, trusted):
            break
    return client


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
