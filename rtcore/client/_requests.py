"""A client's requests in flight: each is sent with a fresh id and waits for the reply that
the reader hands over (:meth:`Requests.resolve`) or for the connection to drop
(:meth:`Requests.fail_all`); the caller bounds the wait (the request timeout). Also the
request frames' builders and the history reply's parser.

An ``ok``'s data is the server's reply as decoded from msgpack (protocol.md §4): a map whose
keys depend on the request, hence ``Any``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs

from rtcore.client._websocket import WebSocket, WebSocketClosed
from rtcore.client.errors import ConnectionLostError, RequestError
from rtcore.protocol import RemoteProtocolError, codec
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

OnOk = Callable[[object], None]
"""Called by the reader with an ``ok``'s data as it arrives, in frame order."""


class _Reply:
    __slots__ = ("done", "frame", "error", "on_ok")

    def __init__(self, on_ok: OnOk | None = None) -> None:
        self.done = anyio.Event()
        self.frame: f.Ok | f.Err | None = None
        self.error: Exception | None = None
        self.on_ok = on_ok


class Requests:
    """Request id -> the reply it waits for."""

    __slots__ = ("_ids", "_replies")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._replies: dict[int, _Reply] = {}

    async def send(
        self,
        ws: WebSocket,
        make: Callable[[int], f.Request],
        on_ok: OnOk | None = None,
    ) -> Any:
        """Send ``make(id)`` and return its ``ok``'s data, once it arrives.

        Raises:
            RequestError: the reply was an ``err``.
            ConnectionLostError: the connection closed before the reply arrived.
        """
        rid = next(self._ids)
        reply = self._replies[rid] = _Reply(on_ok)
        try:
            try:
                await ws.send_message(codec.encode(make(rid)))
            except WebSocketClosed as exc:
                raise ConnectionLostError("the connection closed while sending") from exc
            await reply.done.wait()
        finally:
            del self._replies[rid]
        if reply.error is not None:
            raise reply.error
        if isinstance(reply.frame, f.Err):
            err = reply.frame
            raise RequestError(err.code, err.message, err.limiter, err.retry_after)
        assert reply.frame is not None
        return reply.frame.data

    @property
    def in_flight(self) -> Mapping[int, object]:
        """Request id -> its pending reply."""
        return self._replies

    def resolve(self, frame: f.Ok | f.Err) -> bool:
        """Hand a reply to its request; False if none waits for it."""
        reply = self._replies.get(frame.id) if frame.id is not None else None
        if reply is None:
            return False
        reply.frame = frame
        reply.done.set()
        if reply.on_ok is not None and isinstance(frame, f.Ok):
            reply.on_ok(frame.data)
        return True

    def fail_all(self, error: Exception) -> None:
        """The connection is gone: every request waiting for a reply raises ``error``."""
        for reply in self._replies.values():
            reply.error = error
            reply.done.set()


def members_request(channel: str, after: int | None, limit: int, rid: int) -> f.GetMembers:
    return f.GetMembers(rid, channel, after, limit)


async def list_members(request: Callable[..., Any], channel: str, limit: int, merge: OnOk) -> None:
    """Every page of ``channel``'s members, ``limit`` at a time, each handed to ``merge``
    as its ``ok`` arrives (``request``: the link's, unbuffered: a lost connection ends it)."""
    after: int | None = None
    while True:
        page = functools.partial(members_request, channel, after, limit)
        after = (await request(page, buffered=False, on_ok=merge))["next"]
        if after is None:
            return


def refresh_request(token: str, rid: int, channel: str | None = None) -> f.Refresh:
    return f.Refresh(rid, token, channel)


def join_request(
    channel: str,
    echo: bool | None,
    recover: Position | None,
    token: str | None,
    data: Any,
    rid: int,
) -> f.Join:
    wire = None if recover is None else recover.to_wire()
    return f.Join(rid, channel, echo, wire, token, data)


def history_request(
    channel: str, since: Position | None, limit: int, reverse: bool, rid: int
) -> f.History:
    wire = None if since is None else since.to_wire()
    return f.History(rid, channel, wire, limit, reverse or None)


@attrs.frozen
class HistoryPage:
    """A page of a channel's history (:meth:`Client.history`)."""

    messages: list[f.Msg]
    top: Position
    """The channel stream's epoch and latest offset when the page was read."""
    next: Position | None
    """Where the next page starts (the ``since`` to pass), or None after the last page."""

    @classmethod
    def from_reply(cls, data: Any) -> HistoryPage:
        try:
            messages = [codec.msg_from_map(m) for m in data["messages"]]
            nxt = data["next"]
            return cls(
                messages,
                Position(data["epoch"], data["offset"]),
                None if nxt is None else Position(nxt["epoch"], nxt["offset"]),
            )
        except (KeyError, TypeError) as exc:
            raise RemoteProtocolError(f"a malformed history reply: {exc!r}") from exc
