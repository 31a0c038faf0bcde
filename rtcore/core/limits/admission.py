"""Admission of new connections and of inbound traffic (sans-IO: ``now`` is passed in,
monotonic seconds).

Theory of operation: a connection is counted from the moment it is accepted, before a byte of
its upgrade is read, so stalled handshakes cost the same as open connections:

* server-wide, every accepted client connection counts toward ``max_connections``
  (:func:`connection_cap`); beyond it the transport refuses at once and cheaply;
* per IP address, toward ``max_connections_per_ip`` (4020) and the connection-rate bucket
  (4029). The TCP peer is known at accept; behind a trusted proxy the client's address is only
  known from the upgrade request, so such connections are counted per IP after it;
* a refused connection may be told why (a minimal upgrade, then the close code), but only a few
  at a time per IP (:data:`EXPLAINED_REFUSALS_PER_IP`): a flood's excess is closed at once.

:class:`InboundBudget` is one connection's inbound frame and byte rate (two token buckets, each
charge granted or refused whole; a refusal closes the connection): every frame counts
(pings, pongs and empty fragments too), so a flood of cheap frames ends with 4031 instead of
costing CPU without bound.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable

from rtcore.config.model import Limits
from rtcore.core.limits.bucket import refilled
from rtcore.core.limits.limiter import Chain, Rule
from rtcore.protocol import CloseCode
from rtcore.protocol.close import Close

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RESERVED_FILES = 64
"""Descriptors kept free beside the client and API connections: listeners, the event loop,
log files, Redis and other outbound connections (:func:`connection_cap`)."""

EXPLAINED_REFUSALS_PER_IP = 8
"""Refused connections per IP that are told why (upgrade, then 4020/4029) at the same time;
further ones are closed at once."""


def connection_cap(limits: Limits, open_files: int) -> int:
    """The server-wide cap on client connections: ``limits.max_connections`` if set, else
    ``open_files - api_max_connections - RESERVED_FILES`` (at least 1), where ``open_files`` is
    the process's soft RLIMIT_NOFILE."""
    if limits.max_connections is not None:
        return limits.max_connections
    return max(1, open_files - limits.api_max_connections - RESERVED_FILES)


class Admission:
    """Server-wide and per-IP open-connection counts, and connection-rate buckets.

    Args:
        limits: the per-IP limits and ``max_connections``.
        open_files: the process's open-files limit (for the derived server-wide cap).
    """

    def __init__(self, limits: Limits, open_files: int = 1024) -> None:
        self.counts: dict[str, int] = {}
        """Connections per IP address counted by :meth:`admit`."""
        self.explaining: dict[str, int] = {}
        """Refused connections per IP being told why."""
        self.open = 0
        """Client connections accepted and not yet ended (:meth:`accept`)."""
        self.limits = limits
        self.open_files = open_files
        self.cap = connection_cap(limits, open_files)
        self._rate = Chain()
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        """New limits (a reload). Connections already open stay open."""
        self.limits = limits
        self.cap = connection_cap(limits, self.open_files)
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

    def accept(self) -> bool:
        """Count a newly accepted connection server-wide; False: over ``max_connections``
        (then nothing was counted)."""
        if self.open >= self.cap:
            return False
        self.open += 1
        return True

    def ended(self) -> None:
        """A connection counted by :meth:`accept` ended."""
        self.open = max(0, self.open - 1)

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
        _decrement(self.counts, ip)

    def explain(self, ip: str) -> bool:
        """May one more refused connection from ``ip`` be told why? (counted if so, until
        :meth:`explained`)."""
        if self.explaining.get(ip, 0) >= EXPLAINED_REFUSALS_PER_IP:
            return False
        self.explaining[ip] = self.explaining.get(ip, 0) + 1
        return True

    def explained(self, ip: str) -> None:
        """A refused connection counted by :meth:`explain` ended."""
        _decrement(self.explaining, ip)

    def sweep(self, now: float) -> None:
        self._rate.sweep(now)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class InboundBudget:
    """One connection's inbound frame and byte rate: two token buckets (``now`` passed in).

    The transport charges each read's bytes with :meth:`charge_bytes` and each frame with
    :meth:`charge_frame`; either returns the close once its bucket is overdrawn. The two
    buckets are held here as numbers with one refill time, not as two
    :class:`~rtcore.core.limits.bucket.TokenBucket` objects: every connection has them
    (~130 bytes less per idle connection); they refill by the same rule (``refilled``).
    """

    __slots__ = ("_limits", "_frames", "_bytes", "_stamp")

    def __init__(self, limits: Limits, now: float) -> None:
        self._limits = limits
        self._frames = float(limits.inbound_frame_burst)
        self._bytes = float(limits.inbound_byte_burst)
        self._stamp = now

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill (call once per read)."""
        elapsed = now - self._stamp
        if elapsed > 0:
            limits = self._limits
            self._frames = refilled(
                self._frames,
                float(limits.inbound_frame_burst),
                limits.inbound_frames_per_second,
                elapsed,
            )
            self._bytes = refilled(
                self._bytes,
                float(limits.inbound_byte_burst),
                limits.inbound_bytes_per_second,
                elapsed,
            )
            self._stamp = now

    def charge_bytes(self, n: int) -> Close | None:
        if self._bytes >= n:
            self._bytes -= n
            return None
        return Close(
            CloseCode.INBOUND_FLOOD,
            f"more than {self._limits.inbound_bytes_per_second:g} bytes a second "
            f"(burst {self._limits.inbound_byte_burst})",
        )

    def charge_frame(self) -> Close | None:
        if self._frames >= 1.0:
            self._frames -= 1.0
            return None
        return Close(
            CloseCode.INBOUND_FLOOD,
            f"more than {self._limits.inbound_frames_per_second:g} frames a second "
            f"(burst {self._limits.inbound_frame_burst}; pings and fragments count)",
        )


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's IP address: the TCP peer, unless the peer is a trusted proxy.

    Then ``X-Forwarded-For`` is read from the right (each proxy appends the address it got
    the request from), skipping trusted proxies: the first address that is not one is the
    client. Entries an untrusted hop could have written further left are ignored, so a client
    cannot choose its own address. An unparsable entry stops the walk at the last good one.
    """
    if not trusted or not within(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not within(hop, trusted):
            break
    return client


def within(address: str, networks: tuple[Network, ...]) -> bool:
    """Is ``address`` in one of ``networks``? (an unparsable address is not)"""
    if not networks:  # the default (no trusted proxies): no need to parse, per connection
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
