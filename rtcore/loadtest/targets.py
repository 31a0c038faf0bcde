"""Where the load goes: ``ws://host:port/path`` URLs, resolved, and refused unless every
address is loopback or the operator says the target is theirs (``--i-own-this-target``).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from rtcore.loadtest.plan import Target


class TargetError(Exception):
    """A target URL the load test will not use: the message says why and what to do."""


def parse(url: str, own_target: bool) -> Target:
    """The target of ``url``; raises TargetError for a URL it cannot use or may not load."""
    parts = urlsplit(url)
    if parts.scheme == "wss":
        raise TargetError(
            f"{url}: wss:// is not supported by the load clients; point them at the plain "
            "ws:// port behind your TLS proxy (or at the proxy's plain listener)"
        )
    if parts.scheme != "ws" or not parts.hostname:
        raise TargetError(f"{url}: expected ws://HOST[:PORT][/PATH]")
    port = parts.port or 80
    address = _resolve(parts.hostname, port, url)
    if not own_target and not ipaddress.ip_address(address).is_loopback:
        raise TargetError(
            f"{url} resolves to {address}, which is not a loopback address: load only "
            "deployments you run, and say so with --i-own-this-target"
        )
    host_header = parts.netloc.rsplit("@", 1)[-1]
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(address, port, path, host_header)


def _resolve(host: str, port: int, url: str) -> str:
    """The first address ``host`` resolves to; every one is checked by the caller's rule
    through this one because the load clients connect to this one only."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetError(f"{url}: cannot resolve {host}: {exc.strerror}") from exc
    return str(infos[0][4][0])
