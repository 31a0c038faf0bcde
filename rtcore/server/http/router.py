"""The server API over HTTP/1.1 (docs/api.md), on h11 and trio.

One task per HTTP connection, keep-alive, bounded: connections by
``limits.api_max_connections`` (the server's accept loop), request heads by h11
(``max_incomplete_event_size``), bodies by ``limits.max_api_body_bytes``, idle connections by
``limits.api_idle_timeout``. Every refusal is a 4xx with ``{"code", "message"}``; a 5xx only
ever means a bug here, and a bug while serving one request is answered 500 (if nothing of the
response was sent yet), logged once, and ends that connection alone.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import h11
import trio

from rtcore import operations
from rtcore.config.model import Config
from rtcore.observe.events import ServerStatistics
from rtcore.protocol import codec, values
from rtcore.server.http import admin, api, operating
from rtcore.server.http.messages import MSGPACK, Answer, Payload, Request, Text, error

log = logging.getLogger("rtcore.http")

REQUEST_TIMEOUT = 10.0


class Host(api.Served, admin.Administered, operating.Operated, Protocol):
    """What the server-API port needs of the server: what its handlers need, and where
    answered requests are counted."""

    @property
    def config(self) -> Config: ...

    @property
    def statistics(self) -> ServerStatistics: ...


async def dispatch(server: Host, req: Request) -> Answer:
    """Route one request: the operators' endpoints, the settings page, or the server API."""
    if req.path in operating.PATHS:
        return operating.answer(server, req)
    if admin.is_admin(req.path):
        return await admin.answer(server, req)
    return await api.answer(server, req)


def count_request(statistics: ServerStatistics, status: int, payload: Payload) -> None:
    """Count one answered server-API request."""
    code = payload.get("code") if isinstance(payload, dict) and status >= 400 else None
    statistics.count_api_request(status, str(code) if code is not None else "ok")


# -- the HTTP connection ----------------------------------------------------------------------


async def serve_connection(server: Host, stream: trio.SocketStream) -> None:
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
                    error("internal_error", "the server failed; it was logged"),
                    "",
                )
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_requests(server: Host, stream: trio.SocketStream, conn: h11.Connection) -> None:
    idle_timeout = server.config.limits.api_idle_timeout
    try:
        while True:
            with trio.move_on_after(
                idle_timeout if conn.their_state is h11.IDLE else REQUEST_TIMEOUT
            ):
                status, payload, accept = await _one_request(server, stream, conn)
                count_request(server.statistics, status, payload)
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
                error("bad_request", f"malformed HTTP request: {exc}"),
                "",
            )
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return


async def _one_request(
    server: Host, stream: trio.SocketStream, conn: h11.Connection
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
                return 400, error("bad_request", AMBIGUOUS_LENGTH), ""  # and close
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                return 413, error("payload_too_large", f"bodies are limited to {limit} bytes"), ""
        elif isinstance(event, h11.EndOfMessage):
            break
    assert head is not None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    try:
        req = Request(head.method.decode(), head.target.decode("latin-1"), headers, bytes(body))
    except operations.ApiError as exc:  # a malformed target: the client's fault, no log
        return exc.status, error(exc.code, exc.message), headers.get("accept", "")
    try:
        status, payload = await dispatch(server, req)
    except operations.ApiError as exc:
        status, payload = exc.status, error(exc.code, exc.message)
    except Exception:
        log.exception("server API: %s %s failed", req.method, req.path)
        status, payload = 500, error("internal_error", "the server failed; it was logged")
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


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    payload: Payload,
    accept: str,
) -> None:
    extra: tuple[tuple[str, str], ...] = ()
    if isinstance(payload, Text):
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
        failure = error("internal_error", "the server failed; it was logged")
        if msgpack:
            return 500, codec.pack(failure), "application/msgpack"
        return 500, values.dumps_json(failure), "application/json"
