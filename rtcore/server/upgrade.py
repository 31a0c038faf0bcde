"""The WebSocket upgrade request, parsed and answered without I/O (RFC 6455 §4.2).

What wsproto's h11-based handshake did, for the one request a WebSocket server reads, at a
fraction of its cost (bench/RESULTS.md, "Cheaper connection setup"): the request head is
found in the bytes read so far (:func:`head_end`), checked against HTTP/1.1's grammar (the
same patterns as h11) and against RFC 6455 §4.2.1 (:func:`parse`), and answered with a 101
whose only variable part is the accept token (:func:`switching_protocols`). The frames that
follow are wsproto's frame-level connection's (rtcore.server.handshake).

A request that is not a valid upgrade raises :class:`Refused` with the status and reason to
answer (rtcore.server.connection first offers it to rtcore.server.http.static, which serves
plain requests). The head is bounded by :data:`MAX_HEAD` bytes (431 beyond it).
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_HEAD = 16 * 1024
"""The longest request head accepted, in bytes (h11's default bound, which wsproto used):
a head not complete within it is answered 431."""

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_REQUEST_LINE = re.compile(rb"(%s) (%s+) HTTP/([0-9])\.([0-9])\r?\n" % (_TOKEN, _VCHAR))
_HEADER = re.compile(rb"^(%s):([\t\x20-\x7e\x80-\xff]*)\r?\n" % _TOKEN, re.MULTILINE)
"""A header line: field-name ":" field-value, the value's characters those of h11's
field-content (visible characters, obs-text, spaces and tabs; no other control character),
its surrounding whitespace stripped after."""

DROPPED = frozenset({b"host", b"sec-websocket-extensions", b"sec-websocket-protocol"})
"""Headers not passed on with the others (to connect hooks and key restrictions): what
wsproto's Request left out of its ``extra_headers``."""

Headers = list[tuple[bytes, bytes]]


class Refused(Exception):
    """Not a valid upgrade request: answer ``status`` with ``message`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> bytes:
        """The whole HTTP response; the connection closes after it."""
        body = self.message.encode() + b"\n"
        return (
            b"HTTP/1.1 %d %s\r\n%scontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (self.status, REASONS[self.status], self.headers, len(body), body)
        )


REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
}

TOO_LARGE = Refused(431, f"the request head is longer than {MAX_HEAD} bytes")


def head_end(data: bytes, start: int = 0) -> int:
    """The offset just past the blank line that ends the request head in ``data`` (CRLF or
    bare LF line ends, as h11 accepts), or -1 while it is incomplete. ``start``: where the
    search may begin (what was already searched, less 3 bytes)."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    return crlf + 4 if crlf >= 0 else -1


def parse(head: bytes) -> tuple[bytes, Headers]:
    """The Sec-WebSocket-Key and the headers (lowercase names, less :data:`DROPPED`) of a
    valid upgrade request head (up to and including its blank line); raises
    :class:`Refused`, with wsproto's status for each case, for anything else."""
    head = head.lstrip(b"\r\n")
    request = _REQUEST_LINE.match(head)
    if request is None:
        raise Refused(400, "malformed HTTP request line")
    fields = _HEADER.findall(head, request.end())
    if len(fields) != head.count(b"\n", request.end()) - 1:  # every line but the blank one
        # (a folded line, obs-fold, is refused too: RFC 9112 §5.2 allows it)
        raise Refused(400, "malformed HTTP header line")
    headers: Headers = []
    key: bytes | None = None
    version: bytes | None = None
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    host = False
    for name, value in fields:
        name, value = name.lower(), value.strip(b" \t")
        if name == b"connection":
            connection += _tokens(value)
        elif name == b"upgrade":
            upgrade += _tokens(value)
        elif name == b"sec-websocket-key":
            if key is not None:
                raise Refused(400, "several Sec-WebSocket-Key headers")
            key = value
        elif name == b"sec-websocket-version":
            version = value if version in (None, value) else b"(several)"
        elif name == b"host":
            host = True
        if name not in DROPPED:
            headers.append((name, value))
    _check(request, connection, upgrade, version, key, host)
    assert key is not None
    return key, headers


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",")]


def _check(
    request: re.Match[bytes],
    connection: list[bytes],
    upgrade: list[bytes],
    version: bytes | None,
    key: bytes | None,
    host: bool,
) -> None:
    """RFC 6455 §4.2.1, in wsproto's order and with its statuses."""
    if request.group(1) != b"GET":
        raise Refused(400, "a WebSocket upgrade must be a GET request")
    if request.group(3) != b"1" or request.group(4) == b"0":
        raise Refused(400, "a WebSocket upgrade needs HTTP/1.1")
    if b"upgrade" not in connection:
        raise Refused(400, "missing header 'Connection: Upgrade'")
    if version != b"13":
        raise Refused(
            426 if version else 400,
            "this server speaks WebSocket version 13 (Sec-WebSocket-Version)",
            b"Sec-WebSocket-Version: 13\r\n",
        )
    if key is None:
        raise Refused(400, "missing header 'Sec-WebSocket-Key'")
    if b"websocket" not in upgrade:
        raise Refused(400, "missing header 'Upgrade: websocket'")
    if not host:
        raise Refused(400, "missing header 'Host'")


_ACCEPT_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)


def switching_protocols(key: bytes) -> bytes:
    """The 101 that accepts an upgrade with this Sec-WebSocket-Key (the same bytes wsproto
    sent: no subprotocol, no extension)."""
    token = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
    return b"%s%s\r\n\r\n" % (_ACCEPT_HEAD, token)


FORBIDDEN = Refused(403, "this origin may not connect (allowed_origins)")
