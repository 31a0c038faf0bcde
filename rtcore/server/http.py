"""The server API over HTTP/1.1 (docs/api.md), on h11 and trio.

One task per HTTP connection, keep-alive, bounded: request heads by h11
(``max_incomplete_event_size``), bodies by ``limits.max_api_body_bytes``, idle connections by a
timeout. Every refusal is a 4xx with ``{"code", "message"}``; a 5xx only ever means a bug here.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from rtcore import api
from rtcore.app import App
from rtcore.protocol import RtcoreError, codec
from rtcore.server import observing

if TYPE_CHECKING:
    from rtcore.server.server import Server

log = logging.getLogger("rtcore.http")

IDLE_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
MSGPACK = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

Handler = Callable[["Server", App, "Request"], api.Outcome]
Payload = dict[str, Any] | observing.Text


class Request:
    """A parsed API request."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {}

    def json(self) -> dict[str, Any]:
        """The body as an object, from JSON or msgpack per Content-Type."""
        kind = self.headers.get("content-type", "application/json").split(";")[0].strip()
        if not self.body:
            return {}
        if kind != "application/json" and kind not in MSGPACK:
            raise api.ApiError(
                415, "unsupported_media_type", "send application/json or application/msgpack"
            )
        try:
            value = json.loads(self.body) if kind == "application/json" else codec.unpack(self.body)
        except (ValueError, RtcoreError) as exc:  # JSON errors; codec's RemoteProtocolError
            raise api.ApiError(400, "bad_request", f"the body does not parse: {exc}") from None
        if not isinstance(value, dict):
            raise api.ApiError(400, "bad_request", "the body must be an object")
        return value


def _field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    if name not in body:
        if required:
            raise api.ApiError(400, "bad_request", f"missing field {name!r}")
        return None
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise api.ApiError(400, "bad_request", f"field {name!r} has the wrong type")
    return value


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise api.ApiError(400, "bad_request", f"query parameter {name!r} must be an integer")
    return int(raw)


# -- routes -----------------------------------------------------------------------------------


def _send(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.send(
        app, _field(body, "channel", str), _field(body, "event", str), body.get("data"), time.time()
    )


def _broadcast(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.broadcast(app, _field(body, "event", str), body.get("data"), time.time())


def _members(server: Server, app: App, req: Request) -> api.Outcome:
    return api.members(
        app,
        req.params["name"],
        _int_param(req, "after"),
        _int_param(req, "limit"),
        server.config.limits.max_members_page,
    )


def _user_event(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.publish_user_event(
        app,
        _field(body, "user", str),
        _field(body, "event", str),
        _field(body, "session", dict, required=False),
        _field(body, "data", dict, required=False),
        time.time(),
    )


def _disconnect_user(server: Server, app: App, req: Request) -> api.Outcome:
    return api.disconnect_user(app, req.params["name"])


def _disconnect_session(server: Server, app: App, req: Request) -> api.Outcome:
    revoke = _field(req.json(), "revoke", bool, required=False)
    return api.disconnect_session(app, req.params["name"], bool(revoke), time.time())


def _stats(server: Server, app: App, req: Request) -> api.Outcome:
    return api.stats(app)


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/send"), _send),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/broadcast"), _broadcast),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/members"), _members),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/user-events"), _user_event),
    (
        "POST",
        re.compile(r"/v1/apps/(?P<app>[^/]+)/users/(?P<name>[^/]+)/disconnect"),
        _disconnect_user,
    ),
    (
        "POST",
        re.compile(r"/v1/apps/(?P<app>[^/]+)/sessions/(?P<name>[^/]+)/disconnect"),
        _disconnect_session,
    ),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/stats"), _stats),
]


def dispatch(server: Server, req: Request) -> tuple[int, Payload]:
    """Route, authenticate and run one request; returns the status and the response object."""
    if req.path == "/healthz":
        return 200, {"ok": True}
    if req.path in observing.PATHS:  # /metrics, /readyz
        return observing.answer(server, req)
    allowed = []
    for method, pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if match is None:
            continue
        allowed.append(method)
        if method != req.method:
            continue
        req.params = {k: unquote(v) for k, v in match.groupdict().items()}
        app = _authorize(server, req)
        outcome = handler(server, app, req)
        server.close_members(outcome.closing)
        return 200, outcome.result
    if allowed:
        raise api.ApiError(405, "method_not_allowed", f"use {' or '.join(allowed)}")
    raise api.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")


def _authorize(server: Server, req: Request) -> App:
    app = server.apps.get(req.params["app"])
    if app is None:
        raise api.ApiError(404, "unknown_app", f"this server hosts no app {req.params['app']!r}")
    secret = app.settings.server_secret
    if secret is None:
        raise api.ApiError(
            403,
            "server_api_disabled",
            f"app {app.name!r} has no server_secret: its server API is off",
        )
    given = req.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), secret.encode()):
        raise api.ApiError(401, "unauthorized", "Authorization: Bearer <the app's server_secret>")
    return app


# -- the HTTP connection ----------------------------------------------------------------------


async def serve_connection(server: Server, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        while True:
            with trio.move_on_after(
                IDLE_TIMEOUT if conn.their_state is h11.IDLE else REQUEST_TIMEOUT
            ):
                status, payload, accept = await _one_request(server, stream, conn)
                observing.count_request(server, status, payload)
                await _respond(stream, conn, status, payload, accept)
                if conn.their_state is not h11.DONE:  # we answered before the body ended
                    await _linger(stream)
                    return
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                continue
            return  # timed out
    except h11.RemoteProtocolError as exc:
        # h11 lets us answer a malformed request: say what was wrong, then close.
        with trio.move_on_after(1), _suppress_io():
            await _respond(
                stream,
                conn,
                exc.error_status_hint,
                _error("bad_request", f"malformed HTTP request: {exc}"),
                "",
            )
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def _one_request(
    server: Server, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, Payload, str]:
    limit = server.config.limits.max_api_body_bytes
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)  # b"" is EOF
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise trio.ClosedResourceError
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                return 413, _error("payload_too_large", f"bodies are limited to {limit} bytes"), ""
        elif isinstance(event, h11.EndOfMessage):
            break
    assert head is not None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    req = Request(head.method.decode(), head.target.decode("latin-1"), headers, bytes(body))
    try:
        status, payload = dispatch(server, req)
    except api.ApiError as exc:
        status, payload = exc.status, _error(exc.code, exc.message)
    except Exception:
        log.exception("server API: %s %s failed", req.method, req.path)
        status, payload = 500, _error("internal_error", "the server failed; it was logged")
    return status, payload, headers.get("accept", "")


async def _linger(stream: trio.SocketStream) -> None:
    """Close without destroying our answer: a close with unread input sends a TCP reset,
    which can discard the response before the client reads it. So: stop sending, read and
    drop what the client still sends (bounded), then close."""
    with trio.move_on_after(2), _suppress_io():
        await stream.send_eof()
        for _ in range(256):
            if not await stream.receive_some(65536):
                return


class _suppress_io:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(
            exc, trio.BrokenResourceError | trio.ClosedResourceError | h11.LocalProtocolError
        )


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    payload: Payload,
    accept: str,
) -> None:
    if isinstance(payload, observing.Text):
        body, kind = payload.body, payload.content_type
    elif any(kind in accept for kind in MSGPACK):
        body, kind = codec.pack(payload), "application/msgpack"
    else:
        body, kind = json.dumps(payload, default=_json_default).encode(), "application/json"
    headers = [("content-type", kind), ("content-length", str(len(body)))]
    if conn.their_state is not h11.DONE:  # e.g. a 413 before the body ended: do not read on
        headers.append(("connection", "close"))
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


def _json_default(value: Any) -> Any:
    """Binary values from msgpack clients have no JSON form: base64 (msgpack keeps them)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)
