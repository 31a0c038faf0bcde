"""Accept loops that outlive running out of descriptors or memory, and cheap refusals (trio).

trio's ``SocketListener.accept`` raises EMFILE, ENFILE, ENOBUFS and ENOMEM to its caller (only
``serve_listeners`` retries them); a loop that let one escape would end the server. Here such
an error is logged (at most once per :data:`LOG_EVERY` seconds, with a count of the ones not
logged), the loop backs off :data:`BACKOFF` seconds -- connections that end meanwhile free
descriptors -- and goes on.

A connection refused at accept (over a cap) costs no task: a canned HTTP response is written
with one non-blocking write, if the socket takes it, and the socket is closed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from rtcore.observe.throttled_log import ThrottledLog

log = logging.getLogger("rtcore.accept")

TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() errors that say "not now" about the process or the machine, not about the
listener: back off and retry."""

BACKOFF = 0.1
"""Seconds to wait after a transient accept error (trio's serve_listeners waits as long)."""


async def accept_forever(
    listener: trio.abc.Listener[Any], accepted: Callable[[Any], None], what: str
) -> None:
    """Accept connections from ``listener`` and hand each to ``accepted`` (which must not
    block); survives :data:`TRANSIENT` errors. Returns never; ends by cancellation or when the
    listener is closed (ClosedResourceError)."""
    trouble = ThrottledLog(log)
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in TRANSIENT:
                raise
            trouble.warning(
                trio.current_time(),
                "%s: cannot accept connections: %s; retrying in %g s",
                what,
                os.strerror(exc.errno or 0),
                BACKOFF,
            )
            await trio.sleep(BACKOFF)
            continue
        try:
            accepted(stream)
        except Exception:
            # A bug in the handler: this connection alone is lost, the loop goes on.
            log.exception("%s: failed to start a connection", what)
            close_now(stream)


def canned_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with a ``{"code", "message"}`` body that closes."""
    body = json.dumps({"code": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def socket_of(stream: Any) -> trio.socket.SocketType:
    """The trio socket under a SocketStream or an SSLStream."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock: trio.socket.SocketType = stream.socket
    return sock


def refuse_now(stream: Any, response: bytes) -> None:
    """Write ``response`` if the socket takes it at once (never over TLS: it would be
    garbage before a TLS handshake), then close. Never blocks, never raises."""
    sock = socket_of(stream)
    if not isinstance(stream, trio.SSLStream):
        try:
            os.write(sock.fileno(), response)
        except OSError:
            pass  # full or gone: the close says enough
    sock.close()


def close_now(stream: Any) -> None:
    """Close an accepted stream's socket without awaiting (never raises)."""
    try:
        socket_of(stream).close()
    except Exception:  # pragma: no cover - closing a socket does not fail in practice
        log.exception("closing a refused connection failed")


def peer_ip(sock: trio.socket.SocketType) -> str:
    """The TCP peer's IP address ("?" if the peer is already gone)."""
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"
