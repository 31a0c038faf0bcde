"""The server API over HTTP/1.1 (docs/api.md), on h11 and trio.

One task per HTTP connection, keep-alive, bounded: connections by
``limits.api_max_connections`` (the server's accept loop), request heads by h11
(``max_incomplete_event_size``), bodies by ``limits.max_api_body_bytes``, idle connections by
``limits.api_idle_timeout``. Every refusal is a 4xx with ``{"code", "message"}``; a 5xx only
ever means a bug here, and a bug while serving one request is answered 500 (if nothing of the
response was sent yet), logged once, and ends that connection alone.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from rtcore import operations as api
from rtcore.core.app import App
from rtcore.protocol import RtcoreError, codec, values
from rtcore.protocol.position import Position
from rtcore.server import admin, observing

if TYPE_CHECKING:
    from rtcore.server.server import Server

log = logging.getLogger("rtcore.http")

REQUEST_TIMEOUT = 10.0
MSGPACK = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

Handler = Callable[["Server", App, "Request"], api.Outcome | Awaitable[api.Outcome]]
"""A route: synchronous, or a coroutine where the work is long enough to yield (stats)."""
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
        except RecursionError:  # json's C parser raises it for deep nesting (it is bounded)
            raise api.ApiError(
                400, "bad_request", "the body does not parse: nested too deeply"
            ) from None
        except (ValueError, RtcoreError) as exc:  # JSON errors (incl. >4300-digit integers)
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


_UINT_PARAM = re.compile(r"[0-9]{1,16}")
"""Query integers: ASCII digits only (``str.isdigit`` also takes '²'), below 2**53 in practice."""
MAX_INT_PARAM = 2**53 - 1


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _UINT_PARAM.fullmatch(raw) or int(raw) > MAX_INT_PARAM:
        raise api.ApiError(
            400, "bad_request", f"query parameter {name!r} must be an integer from 0 to 2**53-1"
        )
    return int(raw)


# -- routes -----------------------------------------------------------------------------------


def _send(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.send(
        app,
        _field(body, "channel", str),
        _field(body, "event", str),
        body.get("data"),
        server.wall(),
    )


def _broadcast(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.broadcast(app, _field(body, "event", str), body.get("data"), server.wall())


async def _members(server: Server, app: App, req: Request) -> api.Outcome:
    channel, after = req.params["name"], _int_param(req, "after")
    page_max = server.config.limits.max_members_page
    if not app.broker.shared:
        return api.members(app, channel, after, _int_param(req, "limit"), page_max)
    limit = api.members_limit(channel, _int_param(req, "limit"), page_max)
    return api.members_listed(*await server.cluster_members(app, channel, after, limit))


async def _history(server: Server, app: App, req: Request) -> api.Outcome:
    epoch, offset = req.query.get("since_epoch"), _int_param(req, "since_offset")
    if (epoch is None) != (offset is None):
        raise api.ApiError(400, "bad_request", "give both since_epoch and since_offset, or neither")
    reverse = req.query.get("reverse", "false")
    if reverse not in ("true", "false"):
        raise api.ApiError(400, "bad_request", "query parameter 'reverse' must be true or false")
    since = None if epoch is None or offset is None else Position(epoch, offset)
    return await server.read_history(
        app, req.params["name"], since, _int_param(req, "limit"), reverse == "true"
    )


def _user_event(server: Server, app: App, req: Request) -> api.Outcome:
    body = req.json()
    return api.publish_user_event(
        app,
        _field(body, "user", str),
        _field(body, "event", str),
        _field(body, "session", dict, required=False),
        _field(body, "data", dict, required=False),
        trio.current_time(),
        server.wall(),
    )


def _disconnect_user(server: Server, app: App, req: Request) -> api.Outcome:
    return api.disconnect_user(app, req.params["name"])


def _disconnect_session(server: Server, app: App, req: Request) -> api.Outcome:
    revoke = _field(req.json(), "revoke", bool, required=False)
    return api.disconnect_session(
        app,
        req.params["user"],
        req.params["name"],
        bool(revoke),
        trio.current_time(),
        server.wall(),
    )


async def _stats(server: Server, app: App, req: Request) -> api.Outcome:
    return api.stats(app, sizes=await server.largest_channels(app, api.STATS_TOP))


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/send"), _send),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/broadcast"), _broadcast),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/members"), _members),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/history"), _history),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/user-events"), _user_event),
    (
        "POST",
        re.compile(r"/v1/apps/(?P<app>[^/]+)/users/(?P<name>[^/]+)/disconnect"),
        _disconnect_user,
    ),
    (
        "POST",
        re.compile(
            r"/v1/apps/(?P<app>[^/]+)/users/(?P<user>[^/]+)/sessions/(?P<name>[^/]+)/disconnect"
        ),
        _disconnect_session,
    ),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/stats"), _stats),
]


async def dispatch(server: Server, req: Request) -> tuple[int, Payload]:
    """Route, authenticate and run one request; returns the status and the response object."""
    if req.path == "/healthz":
        return 200, {"ok": True}
    if req.path in observing.PATHS:  # /metrics, /readyz
        return observing.answer(server, req)
    if admin.is_admin(req.path):
        return await admin.answer(server, req)
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
        result = handler(server, app, req)
        outcome = await result if inspect.isawaitable(result) else result
        server.close_members(outcome.closing)
        return 200, outcome.result
    if allowed:
        raise api.ApiError(405, "method_not_allowed", f"use {' or '.join(allowed)}")
    raise api.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")


_NO_SECRET = secrets.token_urlsafe(32)
"""Compared against when the app does not exist or has no server_secret: every refusal takes
the same path, so neither the answer nor its timing tells whether an app exists."""


def _authorize(server: Server, req: Request) -> App:
    """The app, if the request carries its server secret; else 401 -- the same 401 for an
    unknown app, an app without a server_secret and a wrong secret (no app enumeration)."""
    app = server.apps.get(req.params["app"])
    secret = app.settings.server_secret if app is not None else None
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    matches = hmac.compare_digest(token.encode(), (secret or _NO_SECRET).encode())
    if app is None or secret is None or scheme.lower() != "bearer" or not matches:
        raise api.ApiError(401, "unauthorized", "Authorization: Bearer <the app's server_secret>")
    return app


# -- the HTTP connection ----------------------------------------------------------------------


async def serve_connection(server: Server, stream: trio.SocketStream) -> None:
    """Serve one HTTP connection until it ends; never raises (except Cancelled)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        await _serve_requests(server, stream, conn)
    except Exception:
        log.exception("server API: a connection failed")
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # nothing of a response sent yet
            with trio.move_on_after(1), _suppress_io():
                await _respond(
                    stream,
                    conn,
                    500,
                    _error("internal_error", "the server failed; it was logged"),
                    "",
                )
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_requests(server: Server, stream: trio.SocketStream, conn: h11.Connection) -> None:
    idle_timeout = server.config.limits.api_idle_timeout
    try:
        while True:
            with trio.move_on_after(
                idle_timeout if conn.their_state is h11.IDLE else REQUEST_TIMEOUT
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
            if _ambiguous_length(event):
                return 400, _error("bad_request", AMBIGUOUS_LENGTH), ""  # and close
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
        status, payload = await dispatch(server, req)
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


AMBIGUOUS_LENGTH = "a request may not have both Content-Length and Transfer-Encoding"


def _ambiguous_length(head: h11.Request) -> bool:
    """RFC 9112 §6.1: such a request is refused and its connection closed (h11 would let
    Transfer-Encoding win and keep the connection: a request-smuggling vector behind proxies).
    Answering before the body ends makes the caller close the connection."""
    names = {name for name, _ in head.headers}
    return b"content-length" in names and b"transfer-encoding" in names


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    payload: Payload,
    accept: str,
) -> None:
    extra: tuple[tuple[str, str], ...] = ()
    if isinstance(payload, observing.Text):
        body, kind, extra = payload.body, payload.content_type, payload.headers
    else:
        status, body, kind = _encode(status, payload, accept)
    headers = [("content-type", kind), ("content-length", str(len(body))), *extra]
    if conn.their_state is not h11.DONE:  # e.g. a 413 before the body ended: do not read on
        headers.append(("connection", "close"))
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


def _encode(status: int, payload: dict[str, Any], accept: str) -> tuple[int, bytes, str]:
    """The body as msgpack (if accepted) or JSON; binary in JSON is base64 (protocol.md §4.3.1).

    Intake accepts only values both can encode, so failing here is a bug of ours: it is logged
    and answered 500, and the connection goes on.
    """
    msgpack = any(kind in accept for kind in MSGPACK)
    try:
        if msgpack:
            return status, codec.pack(payload), "application/msgpack"
        return status, values.dumps_json(payload), "application/json"
    except Exception:
        log.exception("server API: cannot encode a %d response", status)
        error = _error("internal_error", "the server failed; it was logged")
        if msgpack:
            return 500, codec.pack(error), "application/msgpack"
        return 500, values.dumps_json(error), "application/json"
