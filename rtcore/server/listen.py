"""Listening sockets: trio's, or with SO_REUSEPORT so that several worker processes share a
port (``rtcore serve --workers N``, rtcore.workers).

``trio.open_tcp_listeners`` sets SO_REUSEADDR but offers no SO_REUSEPORT, so
:func:`open_listeners` opens the sockets itself when asked to share the port, exactly as trio
does otherwise (one socket per address the host resolves to, IPv6 sockets IPv6-only, trio's
backlog). With SO_REUSEPORT (Linux) the kernel spreads new connections over every socket
bound to the address, by a hash of the connection's addresses.

A failure to bind is described once, by :func:`failure_reason`, for the server's
``ListenError`` and for the supervisor's check that a port is free (:func:`port_taken`).
"""

from __future__ import annotations

import errno
import socket
import sys

import trio

BACKLOG = 0xFFFF
"""The listen backlog: as large as the system allows (trio's default; it truncates)."""

_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it or choose another port",
    errno.EADDRNOTAVAIL: "this machine has no such address",
    errno.EACCES: "ports below 1024 need privileges: choose a port of 1024 or more",
}


def failure_reason(exc: OSError, host: str, port: int, what: str) -> str:
    """One line: which address could not be bound, why, and what to do about it."""
    hint = _HINTS.get(exc.errno or 0, "")
    return f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}" + (
        f"; {hint}" if hint else ""
    )


async def open_listeners(port: int, host: str, *, reuse_port: bool) -> list[trio.SocketListener]:
    """Listeners on every address ``host`` resolves to; with ``reuse_port``, sockets that
    share the port with other processes' (raises OSError as trio.open_tcp_listeners does)."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Linux and the BSDs have it
        raise OSError(errno.ENOPROTOOPT, f"SO_REUSEPORT is not available on {sys.platform}")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def port_taken(port: int, host: str, what: str) -> str | None:
    """Why ``host:port`` cannot be listened on right now (a :func:`failure_reason`), or None.

    Binds (without listening) and closes at once, *without* SO_REUSEPORT: so it also fails
    where other processes share the port with SO_REUSEPORT (another ``--workers`` group),
    which the workers' own sockets would silently join. Blocking (getaddrinfo): call it
    before serving.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port} ({what}): {exc.strerror}"
    except OSError as exc:
        return failure_reason(exc, host, port, what)
    return None
