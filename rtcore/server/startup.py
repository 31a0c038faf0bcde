"""What the server sets up and says as it starts: its listeners (a failure to bind translated
once into :class:`ListenError`), TLS, the open-files limit its caps derive from, and the
warnings an operator should read (a port open beyond this machine, caps above the limit)."""

from __future__ import annotations

import ipaddress
import logging
import resource
import ssl
from collections.abc import Sequence

import trio

from rtcore.config.model import Config
from rtcore.core.limits.admission import Admission
from rtcore.protocol import RtcoreError
from rtcore.server import listen

log = logging.getLogger("rtcore.server")


class ListenError(RtcoreError, OSError):
    """An address to listen on could not be bound; the message names it and why.

    ``str()`` is that one line, the same ``rtcore serve`` prints (``errno`` is the OS's).
    """

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


async def open_listeners(
    port: int, host: str, what: str, reuse_port: bool
) -> list[trio.SocketListener]:
    """The listeners (rtcore.server.listen), with a failure to bind translated once into
    ListenError."""
    try:
        return await listen.open_listeners(port, host, reuse_port=reuse_port)
    except OSError as exc:
        # from None: the one line says it all; the OS's error is in errno and the message
        raise ListenError(exc.errno, listen.failure_reason(exc, host, port, what)) from None


def address(listener: trio.SocketListener) -> tuple[str, int]:
    """Where ``listener`` listens: (host, port)."""
    host, port = listener.socket.getsockname()[:2]
    return str(host), int(port)


def page_url(address: tuple[str, int], scheme: str, path: str = "/") -> str:
    """A URL a browser on this machine can open for ``address`` (a wildcard host becomes
    loopback; IPv6 in brackets)."""
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def log_pages(
    addresses: Sequence[tuple[str, int]],
    api_addresses: Sequence[tuple[str, int]],
    tls: bool,
    admin: bool,
) -> None:
    """Where a person starts: the demo chat and, on the server-API port, the settings page."""
    scheme = "https" if tls else "http"
    if not addresses:
        return
    if not api_addresses:
        settings = "the settings page is off (no server API)"
    elif admin:
        settings = f"the settings page: {page_url(api_addresses[0], 'http', '/admin')}"
    else:
        settings = "the settings page is off (set server.admin_secret_env to turn it on)"
    log.info("the demo chat: %s; %s", page_url(addresses[0], scheme), settings)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, when it has a certificate and key."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def open_files() -> int:
    """The process's soft open-files limit (RLIMIT_NOFILE); unlimited counts as 2**20."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**20


def log_capacity(config: Config, admission: Admission) -> None:
    """Say the connection caps, and warn when they exceed the open-files limit."""
    limits = config.limits
    log.info(
        "connection caps: %d client connections (max_connections%s), %d server-API",
        admission.cap,
        "" if limits.max_connections is not None else " derived from the open-files limit",
        limits.api_max_connections,
    )
    needed = admission.cap + limits.api_max_connections
    if limits.max_connections is not None and needed > open_files():
        log.warning(
            "max_connections (%d) + api_max_connections (%d) exceed the open-files limit "
            "(%d): raise `ulimit -n` or lower them",
            admission.cap,
            limits.api_max_connections,
            open_files(),
        )


def warn_if_exposed(config: Config, addresses: Sequence[tuple[str, int]]) -> None:
    """Warn when the client port is reachable beyond this machine and an app needs no key."""
    exposed = [h for h, _ in addresses if not _is_loopback(h)]
    open_apps = [a.name for a in config.apps if not a.api_key_required]
    if exposed and open_apps:
        log.warning(
            "SECURITY: serving on %s beyond this machine, and app(s) %s require no API key: "
            "anyone who can reach this port can connect. Configure api_keys, or listen on "
            "127.0.0.1.",
            ", ".join(exposed),
            ", ".join(open_apps),
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
