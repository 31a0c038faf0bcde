"""The WebSocket upgrade's decisions, without I/O: who the client is behind a trusted proxy,
whether its origin may connect, what a request that is not an upgrade is answered, and the
frame-level connection that follows an accepted upgrade (rtcore.server.connection does the
reading and writing; rtcore.server.upgrade parses the request)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionType

from rtcore.core.limits.admission import Network, client_address
from rtcore.server.http import static
from rtcore.server.upgrade import Refused

Headers = Sequence[tuple[bytes, bytes]]


def client_of(headers: Headers, remote: str, trusted_proxies: tuple[Network, ...]) -> str:
    """The client's address: ``remote``, or what X-Forwarded-For says when ``remote`` is a
    trusted proxy."""
    forwarded = (v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for")
    return client_address(remote, forwarded, trusted_proxies)


def origin_of(headers: Headers) -> str | None:
    """The request's Origin header (None: it has none). Several Origin headers are not an
    origin: they give one that matches no pattern."""
    origins = [v for k, v in headers if k == b"origin"]
    if len(origins) > 1:
        return "(several Origin headers)"
    return origins[0].decode("latin-1") if origins else None


def origin_allowed(headers: Headers, allowed: Collection[str]) -> bool:
    """Browsers send Origin; with allowed_origins set, other origins are refused (403).

    Clients that send no Origin (not browsers) are not subject to it: the check protects
    users' browsers from other sites, not the server from programs.
    """
    if not allowed:
        return True
    origins = [v for k, v in headers if k == b"origin"]
    return all(o.decode("latin-1") in allowed for o in origins)


def refusal(refused: Refused, received: bytes, admit: static.Admit) -> bytes:
    """The answer to bytes that are not a valid upgrade request: a plain HTTP request's file
    (rtcore.server.http.static: the client and demo; 429 when ``admit`` refuses its address),
    else the upgrade's own 4xx (rtcore.server.upgrade)."""
    reply = static.respond(received, admit)
    if reply is not None:
        return reply
    return refused.response()


def frame_connection(trailing: bytes) -> Any:
    """wsproto's frame-level server connection, entered in its open state (the upgrade was
    parsed and answered by rtcore.server.upgrade), fed the bytes that followed the request.

    Its event queue is a list, not wsproto's deque: idle connections are what a server has
    most of.
    """
    frames: Any = FrameConnection(ConnectionType.SERVER)
    frames._events = _EventQueue()  # ~700 bytes less per idle connection
    frames._proto.extensions = _NO_EXTENSIONS  # (none are negotiated: one list for all)
    frames._proto._frame_decoder.extensions = _NO_EXTENSIONS
    if trailing:
        frames.receive_data(trailing)
    return frames


def release_buffer(frames: Any) -> None:
    """Give back the read buffer's memory before an idle wait: wsproto's bytearray keeps the
    capacity of the last read after its frames are consumed (~230 bytes per idle connection
    after hello and join; bench/RESULTS.md, "Idle connections")."""
    buffer = frames._proto._frame_decoder.buffer
    if not buffer.buffer:  # all consumed (a partial frame stays where it is)
        buffer.buffer = bytearray()


_NO_EXTENSIONS: list[Any] = []
"""The extensions of every connection (rtcore negotiates none; wsproto only iterates the
list): shared, instead of two empty lists per connection (its frame protocol's and its
decoder's: 112 bytes)."""


class _EventQueue(list[Any]):
    """wsproto's per-connection event queue, smaller: an empty deque is a 64-slot block
    (760 bytes), held by every idle connection; wsproto only appends, pops from the left and
    tests it (wsproto/connection.py), and holds a few events at a time (one read's frames),
    so a list's O(n) pop(0) costs nothing measurable (bench/RESULTS.md, "Idle connections")."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)
