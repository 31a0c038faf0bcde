"""The WebSocket upgrade's decisions, without I/O: who the client is behind a trusted proxy,
whether its origin may connect, what a request that is not an upgrade is answered, and how the
handshake's state is dropped once it is done (rtcore.server.connection does the reading and
writing)."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from typing import Any

import wsproto
from wsproto.events import RejectConnection, Request
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from rtcore.core.limits.admission import Network, client_address
from rtcore.server.http import static


def client_of(request: Request, remote: str, trusted_proxies: tuple[Network, ...]) -> str:
    """The client's address: ``remote``, or what X-Forwarded-For says when ``remote`` is a
    trusted proxy."""
    forwarded = (
        v.decode("latin-1") for k, v in request.extra_headers if k.lower() == b"x-forwarded-for"
    )
    return client_address(remote, forwarded, trusted_proxies)


def origin_of(request: Request) -> str | None:
    """The request's Origin header (None: it has none). Several Origin headers are not an
    origin: they give one that matches no pattern."""
    origins = [v for k, v in request.extra_headers if k.lower() == b"origin"]
    if len(origins) > 1:
        return "(several Origin headers)"
    return origins[0].decode("latin-1") if origins else None


def origin_allowed(request: Request, allowed: Collection[str]) -> bool:
    """Browsers send Origin; with allowed_origins set, other origins are refused (403).

    Clients that send no Origin (not browsers) are not subject to it: the check protects
    users' browsers from other sites, not the server from programs.
    """
    if not allowed:
        return True
    origins = [v for k, v in request.extra_headers if k.lower() == b"origin"]
    return all(o.decode("latin-1") in allowed for o in origins)


def refusal(
    ws: wsproto.WSConnection,
    exc: WSRemoteProtocolError,
    received: bytes,
    admit: static.Admit,
) -> bytes:
    """The answer to bytes that are not a valid upgrade request: a plain HTTP request's file
    (rtcore.server.http.static: the client and demo; 429 when ``admit`` refuses its address),
    else wsproto's own 4xx."""
    reply = static.respond(received, admit)
    if reply is not None:
        return reply
    return ws.send(exc.event_hint or RejectConnection(status_code=400))


def frame_connection(ws: wsproto.WSConnection) -> tuple[Any, bool]:
    """The frame-level connection of an accepted upgrade, fed the bytes that followed the
    request, and whether there were any (the client did not wait for the 101).

    Only that connection is kept: idle connections are what a server has most of. And
    wsproto's server handshake (1.2, 1.3) leaves bytes that came after the upgrade request in
    its h11 connection and does not pass them on, which would silently drop a hello sent
    without waiting for the 101.
    """
    h11_conn = getattr(ws.handshake, "_h11_connection", None)
    trailing = getattr(h11_conn, "trailing_data", (b"", False))[0]
    frames: Any = ws.connection  # (not None: the upgrade was accepted)
    if type(getattr(frames, "_events", None)) is deque:
        frames._events = _EventQueue()  # ~700 bytes less per idle connection
    if trailing:
        frames.receive_data(bytes(trailing))
    return frames, bool(trailing)


class _EventQueue(list[Any]):
    """wsproto's per-connection event queue, smaller: an empty deque is a 64-slot block
    (760 bytes), held by every idle connection; wsproto only appends, pops from the left and
    tests it (wsproto/connection.py), and holds a few events at a time (one read's frames),
    so a list's O(n) pop(0) costs nothing measurable (bench/RESULTS.md, "Idle connections")."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)
