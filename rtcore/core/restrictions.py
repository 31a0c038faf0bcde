"""API key restrictions (sans-IO): which origins and client addresses a key serves, and whether
it may open realtime connections at all (protocol.md §3.4 step 2, §7: 4018, 4019, 4021, 4022).

An origin pattern is an exact origin, ``scheme://host[:port]`` (``https://app.example.com``,
``http://localhost:3000``), or a wildcard for the subdomains of a domain, ``*.example.com``
(any scheme) or ``https://*.example.com`` (that scheme only). A wildcard matches every
subdomain at any depth (``a.example.com``, ``a.b.example.com``) but not the domain itself;
without a port in the pattern only origins on the scheme's default port match. Scheme and
host compare case-insensitively (browsers send them lower-case).

An address restriction is a list of networks (a single address is a /32 or /128); an IPv4
client seen through an IPv6 socket (``::ffff:192.0.2.1``) is matched as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import attrs

from rtcore.protocol import CloseCode
from rtcore.protocol.close import Close

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN = re.compile(
    rf"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?"
    rf"(?P<wild>\*\.)?(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])"
    rf"(?::(?P<port>[0-9]{{1,5}}))?"
)

REFUSAL_REASONS = ("key_not_realtime", "origin_missing", "origin_not_allowed", "ip_not_allowed")
"""What a key restriction refuses, for metrics (a fixed set: bounded labels)."""


class PatternError(ValueError):
    """An origin pattern or address restriction that cannot be used (a config error)."""


@attrs.frozen
class OriginPattern:
    """One entry of a key's ``allowed_origins``."""

    text: str
    """As written in the config (shown and written back by the settings page)."""
    scheme: str | None
    """None: any scheme (wildcards only)."""
    host: str
    """The host, or for a wildcard the domain whose subdomains match."""
    wildcard: bool
    port: int | None


def origin_pattern(text: str) -> OriginPattern:
    """The pattern ``text`` describes; :class:`PatternError` if it is neither an origin nor
    a ``*.domain`` wildcard."""
    match = _ORIGIN.fullmatch(text.strip().lower().rstrip("/"))
    wild = match is not None and match["wild"] is not None
    if match is None or (match["scheme"] is None and not wild) or _bad_port(match["port"]):
        raise PatternError(
            f"{text!r} is not an origin (https://app.example.com, http://localhost:3000) "
            "or a wildcard (*.example.com, https://*.example.com)"
        )
    port = None if match["port"] is None else int(match["port"])
    return OriginPattern(text, match["scheme"], match["host"], wild, port)


def _bad_port(port: str | None) -> bool:
    return port is not None and not 0 < int(port) <= 65535


def origin_allowed(origin: str, patterns: Iterable[OriginPattern]) -> bool:
    """Whether the Origin header ``origin`` matches one of ``patterns``."""
    match = _ORIGIN.fullmatch(origin.strip().lower())
    if match is None or match["scheme"] is None or match["wild"] is not None:
        return False  # "null" (a sandboxed page, a file), or not an origin at all
    scheme, host = match["scheme"], match["host"]
    port = None if match["port"] is None else int(match["port"])
    for p in patterns:
        if p.scheme is not None and p.scheme != scheme:
            continue
        if p.port != port:
            continue
        if host == p.host if not p.wildcard else host.endswith("." + p.host):
            return True
    return False


def address_network(text: str) -> IPNetwork:
    """An entry of ``allowed_ips``: an address or a network in CIDR notation."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise PatternError(
            f"{text!r} is not an IP address or a network (192.0.2.0/24, 2001:db8::/32)"
        ) from None


def ip_allowed(address: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether the client address ``address`` is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # no usable address: refused, never let through
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def check_restrictions(
    realtime: bool,
    origins: tuple[OriginPattern, ...],
    ips: tuple[IPNetwork, ...],
    origin: str | None,
    address: str,
) -> tuple[str, Close] | None:
    """A key's restrictions against a handshake (its Origin header, None when it had none,
    and the client's address): None if they let it in, else the refusal's reason (one of
    :data:`REFUSAL_REASONS`) and close. Checked in protocol.md §3.4's order."""
    if not realtime:
        close = Close(CloseCode.KEY_NOT_REALTIME, "this API key may not open realtime connections")
        return "key_not_realtime", close
    if origins and origin is None:
        close = Close(CloseCode.ORIGIN_MISSING, "this API key requires an Origin header")
        return "origin_missing", close
    if origins and origin is not None and not origin_allowed(origin, origins):
        close = Close(
            CloseCode.ORIGIN_NOT_ALLOWED, f"origin {origin[:100]!r} is not allowed for this key"
        )
        return "origin_not_allowed", close
    if ips and not ip_allowed(address, ips):
        close = Close(CloseCode.IP_NOT_ALLOWED, f"address {address!r} is not allowed for this key")
        return "ip_not_allowed", close
    return None
