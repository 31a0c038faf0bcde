"""Every server API call, described once for both drivers (``_sync``, ``_async``).

Theory of operation: a call is a :data:`Plan`, a generator that yields the HTTP requests to
make (as :class:`Call` descriptions) and is sent each one's decoded reply; what it returns is
the method's result. A one-request call yields once and returns the reply; a listing
(``members_all``, ``history_all``) yields one request per page, each continuing from the
cursor the previous reply returned in ``next``, and stops on the page whose ``next`` is None.
The drivers only turn a :class:`Call` into an HTTP exchange (sync or async), so paging and
reply reading are written once and hold no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import httpx

from rtcore.backend._errors import ServerAPIError
from rtcore.protocol import RtcoreError, codec

MSGPACK = "application/msgpack"
PAGE = 1000
"""Items per page when a listing fetches every page."""

Reply = dict[str, Any]
T = TypeVar("T")
C = TypeVar("C")
Plan = Generator["Call", Reply, T]
"""Yields the requests to make, is sent each decoded reply, returns the result."""


@attrs.frozen
class Call:
    """One HTTP request of the server API, before it is sent."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    """Packed as msgpack; None: no body."""
    params: dict[str, Any] | None = None
    """The query string."""

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        content = codec.pack(self.body) if self.body is not None else None
        headers = {"content-type": MSGPACK} if content is not None else {}
        return client.build_request(
            self.method, self.path, content=content, params=self.params, headers=headers
        )


def read_reply(response: httpx.Response) -> Reply:
    """The decoded reply of a 200, or the :class:`ServerAPIError` the server's reply says."""
    try:
        payload = codec.unpack(response.content)
    except RtcoreError:
        payload = None
    if not isinstance(payload, dict):
        raise ServerAPIError(
            response.status_code,
            "bad_response",
            f"not an rtcore server API reply (HTTP {response.status_code})",
        )
    if response.status_code != 200:
        raise ServerAPIError(
            response.status_code, str(payload.get("code")), str(payload.get("message"))
        )
    return payload


def headers(secret: str) -> dict[str, str]:
    """What every request of an app's backend carries."""
    return {"authorization": f"Bearer {secret}", "accept": MSGPACK}


def one(call: Call) -> Plan[Reply]:
    """A call of one request, whose result is its reply."""
    return (yield call)


def every(page: Callable[[C | None], Call], items: str) -> Plan[list[dict[str, Any]]]:
    """Every item of a listing, page by page: ``page(cursor)`` is the request for the page
    after ``cursor`` (None: the first); each reply's ``next`` is the next cursor, None on the
    last page."""
    found: list[dict[str, Any]] = []
    cursor: C | None = None
    while True:
        reply = yield page(cursor)
        found += reply[items]
        cursor = reply["next"]
        if cursor is None:
            return found


class Calls:
    """The calls of one app's server API (docs/api.md), each as a :data:`Plan`."""

    def __init__(self, app: str) -> None:
        self._base = f"/v1/apps/{quote(app, safe='')}"

    def send(self, channel: str, event: str, data: Any) -> Plan[Reply]:
        body = {"channel": channel, "event": event, "data": data}
        return one(Call("POST", f"{self._base}/send", body))

    def broadcast(self, event: str, data: Any) -> Plan[Reply]:
        return one(Call("POST", f"{self._base}/broadcast", {"event": event, "data": data}))

    def members_all(self, channel: str) -> Plan[list[dict[str, Any]]]:
        return every(partial(self._members, channel), "members")

    def _members(self, channel: str, after: int | None) -> Call:
        params = {"limit": PAGE, **({"after": after} if after is not None else {})}
        return Call("GET", f"{self._channel(channel)}/members", params=params)

    def history(
        self, channel: str, since: dict[str, Any] | None, limit: int, reverse: bool
    ) -> Plan[Reply]:
        return one(self._history(channel, since, limit, reverse))

    def history_all(self, channel: str) -> Plan[list[dict[str, Any]]]:
        return every(partial(self._history_page, channel), "messages")

    def _history_page(self, channel: str, since: dict[str, Any] | None) -> Call:
        return self._history(channel, since, PAGE, False)

    def _history(
        self, channel: str, since: dict[str, Any] | None, limit: int, reverse: bool
    ) -> Call:
        params: dict[str, Any] = {"limit": limit, "reverse": "true" if reverse else "false"}
        if since is not None:
            params |= {"since_epoch": since["epoch"], "since_offset": since["offset"]}
        return Call("GET", f"{self._channel(channel)}/history", params=params)

    def user_event(
        self, user: str, event: str, session: dict[str, Any] | None, data: dict[str, Any] | None
    ) -> Plan[Reply]:
        body: dict[str, Any] = {"user": user, "event": event}
        if session is not None:
            body["session"] = session
        if data is not None:
            body["data"] = data
        return one(Call("POST", f"{self._base}/user-events", body))

    def disconnect_user(self, user: str) -> Plan[Reply]:
        return one(Call("POST", f"{self._user(user)}/disconnect", {}))

    def disconnect_session(self, user: str, session: str, revoke: bool) -> Plan[Reply]:
        path = f"{self._user(user)}/sessions/{quote(session, safe='')}/disconnect"
        return one(Call("POST", path, {"revoke": revoke}))

    def add_member(self, channel: str, user: str | None, conn: str | None) -> Plan[Reply]:
        body = _whom(user, conn)
        return one(Call("POST", f"{self._channel(channel)}/add", body))

    def remove_member(
        self, channel: str, user: str | None, conn: str | None, message: str | None
    ) -> Plan[Reply]:
        body = _whom(user, conn) | ({} if message is None else {"message": message})
        return one(Call("POST", f"{self._channel(channel)}/remove", body))

    def stats(self) -> Plan[Reply]:
        return one(Call("GET", f"{self._base}/stats"))

    def _channel(self, channel: str) -> str:
        return f"{self._base}/channels/{quote(channel, safe='')}"

    def _user(self, user: str) -> str:
        return f"{self._base}/users/{quote(user, safe='')}"


def _whom(user: str | None, conn: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("user", user), ("conn", conn)) if v is not None}
