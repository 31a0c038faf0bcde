"""Plain HTTP on the WebSocket port: the JavaScript client and a demo chat, same origin.

A request on the WebSocket port that is not a WebSocket upgrade (wsproto refuses it) is
answered here, once, and the connection is closed:

* ``GET`` or ``HEAD`` of one of the files in ``rtcore/static`` (the demo page at ``/``, the
  JavaScript client at ``/rtcore-client.js``, its msgpack dependency at ``/msgpack.js``, the
  demo's script and style sheet) gets it, with its content type;
* ``GET`` or ``HEAD`` of anything else gets 404 and a short text saying what this port is;
* any other method gets 405;
* a request from an address over the per-IP connection limits (the same rate and count
  every connection is charged to, §3.3 of protocol.md) gets 429, whatever it asks for.

Every answer allows any origin (CORS): the files are public, and a page on another origin
(the README's quick start) imports the client module from here.

Paths are looked up in a fixed table, never joined onto a directory, so no request can reach
another file. The files are read once, on first use, and are small; the request itself was
bounded by wsproto's header limit before it got here.

A request that asks for an upgrade (even a malformed one) is not answered here: wsproto's own
400 tells a WebSocket client what it got wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from importlib import resources

import h11

FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
    "/rtcore-client.js": ("rtcore-client.js", "text/javascript; charset=utf-8"),
    "/msgpack.js": ("msgpack.js", "text/javascript; charset=utf-8"),
}
"""URL path -> (file in rtcore/static, content type)."""

ABOUT = (
    b"This is an rtcore realtime server's WebSocket port: connect with a WebSocket client "
    b"speaking rtcore's protocol (protocol.md). A demo chat is served at / and the "
    b"JavaScript client at /rtcore-client.js.\n"
)

CSP = (
    b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    b"style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("rtcore").joinpath("static", name).read_bytes()


Admit = Callable[[list[str]], str | None]
"""Whether a plain request may be answered: given its X-Forwarded-For values, None (yes) or
why not (the per-IP connection limits refused it)."""


def _admit_all(forwarded: list[str]) -> str | None:
    return None


def respond(raw: bytes, admit: Admit = _admit_all) -> bytes | None:
    """The whole HTTP response to the plain request in ``raw``; None if it is not one.

    None for bytes that are not a complete HTTP/1.x request head, and for requests asking
    for a WebSocket upgrade: the caller answers those as before. A request ``admit`` refuses
    (its address is over the per-IP connection rate or count, like any connection) gets
    429 and the reason, not the file.
    """
    conn = h11.Connection(h11.SERVER)
    try:
        conn.receive_data(raw)
        request = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request):
        return None
    if any(name == b"upgrade" for name, _ in request.headers):
        return None
    forwarded = [v.decode("latin-1") for k, v in request.headers if k == b"x-forwarded-for"]
    refused = admit(forwarded)
    if refused is not None:
        status, content_type, body = 429, b"text/plain; charset=utf-8", refused.encode() + b"\n"
    else:
        status, content_type, body = _resource(request.method, request.target)
    headers = _headers(status, content_type, body)
    reason = HTTPStatus(status).phrase.encode()
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    if request.method != b"HEAD":
        out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


def _headers(status: int, content_type: bytes, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"connection", b"close"),
        # Public files: pages of any origin may import the client module (a CORS fetch).
        (b"access-control-allow-origin", b"*"),
    ]
    if content_type.startswith(b"text/html"):
        headers.append((b"content-security-policy", CSP))
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    return headers


def _resource(method: bytes, target: bytes) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for a request: a file, 404 or 405."""
    if method not in (b"GET", b"HEAD"):
        return 405, b"text/plain; charset=utf-8", ABOUT
    path = target.split(b"?", 1)[0].decode("latin-1")
    found = FILES.get(path)
    if found is None:
        return 404, b"text/plain; charset=utf-8", ABOUT
    name, content_type = found
    return 200, content_type.encode(), _read(name)
