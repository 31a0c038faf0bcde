"""The server library: an app's backend drives rtcore over its HTTP server API (docs/api.md).

``ServerAPI`` is synchronous (Flask, Django, scripts); ``AsyncServerAPI`` is async and runs under
trio (or asyncio) through httpx. Both speak msgpack, so data round-trips exactly (bytes
included), and raise :class:`ServerAPIError` with the server's code on any refusal::

    api = ServerAPI("http://127.0.0.1:8766", app="chat", secret=os.environ["CHAT_SERVER_SECRET"])
    api.send("lobby", "news", {"headline": "..."})
    api.publish_user_event("user-42", "signout", session={"id": "s-1"})
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from rtcore.protocol import RtcoreError, codec

MSGPACK = "application/msgpack"


class ServerAPIError(RtcoreError):
    """The server refused the call (``status``, ``code``, ``message`` from its reply), or could
    not be reached (``status`` None, ``code`` ``unreachable``)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _Call:
    """One API call: what to send, and how to read the answer (shared by both clients)."""

    def __init__(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.method, self.path, self.body, self.params = method, path, body, params

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        content = codec.pack(self.body) if self.body is not None else None
        headers = {"content-type": MSGPACK} if content is not None else {}
        return client.build_request(
            self.method, self.path, content=content, params=self.params, headers=headers
        )

    @staticmethod
    def result(response: httpx.Response) -> dict[str, Any]:
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


def _calls(app: str) -> Any:
    base = f"/v1/apps/{quote(app, safe='')}"

    class Calls:
        @staticmethod
        def send(channel: str, event: str, data: Any) -> _Call:
            return _Call("POST", f"{base}/send", {"channel": channel, "event": event, "data": data})

        @staticmethod
        def broadcast(event: str, data: Any) -> _Call:
            return _Call("POST", f"{base}/broadcast", {"event": event, "data": data})

        @staticmethod
        def members(channel: str, after: int | None) -> _Call:
            params = {"limit": 1000, **({"after": after} if after is not None else {})}
            return _Call("GET", f"{base}/channels/{quote(channel, safe='')}/members", params=params)

        @staticmethod
        def history(channel: str, since: dict[str, Any] | None, limit: int, reverse: bool) -> _Call:
            params: dict[str, Any] = {"limit": limit, "reverse": "true" if reverse else "false"}
            if since is not None:
                params |= {"since_epoch": since["epoch"], "since_offset": since["offset"]}
            path = f"{base}/channels/{quote(channel, safe='')}/history"
            return _Call("GET", path, params=params)

        @staticmethod
        def user_event(
            user: str, event: str, session: dict[str, Any] | None, data: dict[str, Any] | None
        ) -> _Call:
            body: dict[str, Any] = {"user": user, "event": event}
            if session is not None:
                body["session"] = session
            if data is not None:
                body["data"] = data
            return _Call("POST", f"{base}/user-events", body)

        @staticmethod
        def disconnect_user(user: str) -> _Call:
            return _Call("POST", f"{base}/users/{quote(user, safe='')}/disconnect", {})

        @staticmethod
        def disconnect_session(user: str, session: str, revoke: bool) -> _Call:
            path = f"users/{quote(user, safe='')}/sessions/{quote(session, safe='')}/disconnect"
            return _Call("POST", f"{base}/{path}", {"revoke": revoke})

        @staticmethod
        def stats() -> _Call:
            return _Call("GET", f"{base}/stats")

    return Calls


def _client_options(url: str, secret: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": url,
        "headers": {"authorization": f"Bearer {secret}", "accept": MSGPACK},
        "timeout": timeout,
    }


class ServerAPI:
    """The synchronous server library. Use as a context manager, or call :meth:`close`.

    Args:
        url: the server API's base URL (``[server] api_host:api_port``).
        app: the app to act on.
        secret: the app's ``server_secret``.
        timeout: seconds per HTTP call.
    """

    def __init__(self, url: str, app: str, secret: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(**_client_options(url, secret, timeout))
        self._calls = _calls(app)

    def _do(self, call: _Call) -> dict[str, Any]:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.HTTPError as exc:
            raise ServerAPIError(None, "unreachable", str(exc) or type(exc).__name__) from exc
        return _Call.result(response)

    def send(self, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to the channel's members; ``{"mid", "ts", "recipients"}``."""
        return self._do(self._calls.send(channel, event, data))

    def broadcast(self, event: str, data: Any = None) -> dict[str, Any]:
        return self._do(self._calls.broadcast(event, data))

    def get_members(self, channel: str) -> list[dict[str, Any]]:
        """Every member, ``{"id", "user", "data"}``, fetched page by page."""
        members: list[dict[str, Any]] = []
        after = None
        while True:
            page = self._do(self._calls.members(channel, after))
            members += page["members"]
            after = page["next"]
            if after is None:
                return members

    def history(
        self,
        channel: str,
        since: dict[str, Any] | None = None,
        limit: int = 100,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """A page of the channel's history: ``{"messages", "epoch", "offset", "next"}``; pass
        ``next`` as ``since`` for the next page (None: that was the last)."""
        return self._do(self._calls.history(channel, since, limit, reverse))

    def get_history(self, channel: str) -> list[dict[str, Any]]:
        """Every message the channel's history holds, oldest first (page by page)."""
        messages: list[dict[str, Any]] = []
        since = None
        while True:
            page = self.history(channel, since, 1000)
            messages += page["messages"]
            since = page["next"]
            if since is None:
                return messages

    def publish_user_event(
        self,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Tell ``user``'s connections about their account; ``signout`` ends ``session``."""
        return self._do(self._calls.user_event(user, event, session, data))

    def disconnect_user(self, user: str) -> dict[str, Any]:
        return self._do(self._calls.disconnect_user(user))

    def disconnect_session(self, user: str, session: str, revoke: bool = False) -> dict[str, Any]:
        """Close ``user``'s ``session`` (4017), or with ``revoke`` end it (4016)."""
        return self._do(self._calls.disconnect_session(user, session, revoke))

    def stats(self) -> dict[str, Any]:
        return self._do(self._calls.stats())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncServerAPI:
    """The async server library (trio or asyncio); the same methods as :class:`ServerAPI`."""

    def __init__(self, url: str, app: str, secret: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(**_client_options(url, secret, timeout))
        self._calls = _calls(app)

    async def _do(self, call: _Call) -> dict[str, Any]:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.HTTPError as exc:
            raise ServerAPIError(None, "unreachable", str(exc) or type(exc).__name__) from exc
        return _Call.result(response)

    async def send(self, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        return await self._do(self._calls.send(channel, event, data))

    async def broadcast(self, event: str, data: Any = None) -> dict[str, Any]:
        return await self._do(self._calls.broadcast(event, data))

    async def get_members(self, channel: str) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = []
        after = None
        while True:
            page = await self._do(self._calls.members(channel, after))
            members += page["members"]
            after = page["next"]
            if after is None:
                return members

    async def history(
        self,
        channel: str,
        since: dict[str, Any] | None = None,
        limit: int = 100,
        reverse: bool = False,
    ) -> dict[str, Any]:
        return await self._do(self._calls.history(channel, since, limit, reverse))

    async def get_history(self, channel: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        since = None
        while True:
            page = await self.history(channel, since, 1000)
            messages += page["messages"]
            since = page["next"]
            if since is None:
                return messages

    async def publish_user_event(
        self,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self._do(self._calls.user_event(user, event, session, data))

    async def disconnect_user(self, user: str) -> dict[str, Any]:
        return await self._do(self._calls.disconnect_user(user))

    async def disconnect_session(
        self, user: str, session: str, revoke: bool = False
    ) -> dict[str, Any]:
        """Close ``user``'s ``session`` (4017), or with ``revoke`` end it (4016)."""
        return await self._do(self._calls.disconnect_session(user, session, revoke))

    async def stats(self) -> dict[str, Any]:
        return await self._do(self._calls.stats())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncServerAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
