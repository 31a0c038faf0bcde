"""A real HTTP backend for hook and webhook tests: an h11 server on 127.0.0.1 (trio) whose
answers the test chooses per path: JSON, raw bytes with a status, a hang until released,
or a dropped connection. Every request is recorded with its verified signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import attrs
import h11
import trio


def verify(secret: str, timestamp: str, body: bytes, given: str) -> bool:
    """docs/hooks.md's check, written out here (not rtcore's own code: a test of it)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return timestamp.isdigit() and hmac.compare_digest("sha256=" + mac.hexdigest(), given)


SECRET = "hook-secret-" + "s" * 24


@attrs.define
class Reply:
    status: int = 200
    body: bytes = b""
    hang: trio.Event | None = None
    """Answer only once this is set (a backend that hangs)."""
    drop: bool = False
    """Close the connection without answering."""


def ok(obj: Any) -> Reply:
    return Reply(200, json.dumps(obj).encode())


@attrs.define
class Seen:
    path: str
    body: Any
    signed: bool
    headers: dict[str, str]


Handler = Callable[[str, Any], Reply]


class Backend:
    """``backend.routes[path] = handler(path, body) -> Reply``; ``backend.seen`` records."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self.url = ""
        self.arrived = trio.Event()

    def bodies(self, path: str) -> list[Any]:
        return [s.body for s in self.seen if s.path == path]

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._request(conn, stream)
                if request is None:
                    return
                reply = self._answer(request, body)
                if reply.hang is not None:
                    await reply.hang.wait()
                if reply.drop:
                    return
                await self._send(conn, stream, reply)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        for _ in range(10_000):  # bounded: a request is a few events
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None, b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:
                return None, b""
        return None, b""

    def _answer(self, request: h11.Request, body: bytes) -> Reply:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        signed = verify(
            self.secret,
            headers.get("x-rtcore-timestamp", ""),
            body,
            headers.get("x-rtcore-signature", ""),
        )
        path = request.target.decode()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        self.seen.append(Seen(path, parsed, signed, headers))
        self.arrived.set()
        self.arrived = trio.Event()
        handler = self.routes.get(path)
        return handler(path, parsed) if handler is not None else Reply(404, b"no route")

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> None:
        headers = [("content-type", "application/json"), ("content-length", str(len(reply.body)))]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        data += conn.send(h11.Data(data=reply.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
