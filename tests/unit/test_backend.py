"""The server library's shared core, through both drivers, against a fake server API
(``httpx.MockTransport``): requests are built once, listings page on the server's cursors and
stop on the last page, refusals and unreachable servers become ``ServerAPIError``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

import rtcore
from rtcore import server_api
from rtcore.backend import AsyncServerAPI, ServerAPI, ServerAPIError
from rtcore.protocol import codec

URL = "http://rtcore.test"
SECRET = "s" * 32
Handler = Callable[[httpx.Request], httpx.Response]


def reply(payload: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=codec.pack(payload))


def call(driver: str, handler: Handler, method: str, *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)`` of the ``driver``'s library ("sync" or "async"), talking to
    ``handler`` instead of a server."""
    transport = httpx.MockTransport(handler)
    if driver == "sync":
        with ServerAPI(URL, "chat room", SECRET) as api:
            api._http = httpx.Client(transport=transport, base_url=URL, headers=api._http.headers)
            return getattr(api, method)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncServerAPI(URL, "chat room", SECRET) as api:
            headers = api._http.headers
            api._http = httpx.AsyncClient(transport=transport, base_url=URL, headers=headers)
            return await getattr(api, method)(*args, **kwargs)

    return trio.run(run)


DRIVERS = pytest.mark.parametrize("driver", ["sync", "async"])


class FakeMembers:
    """A channel's member listing, paged with cursors only the server knows (not offsets)."""

    def __init__(self, count: int) -> None:
        self.members = [{"id": f"c{i}", "user": f"u{i}", "data": None} for i in range(count)]
        self.cursors: list[str | None] = []  # the ``after`` of each request, in order
        self.done = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert not self.done, "asked for a page after the last"
        assert request.url.raw_path.split(b"?")[0] == b"/v1/apps/chat%20room/channels/a%2Fb/members"
        after = request.url.params.get("after")
        self.cursors.append(after)
        start = 0 if after is None else (int(after) - 7000) // 3  # cursor 7000 + 3 * index
        page = self.members[start : start + int(request.url.params["limit"])]
        end = start + len(page)
        more = end < len(self.members)
        self.done = not more
        return reply({"members": page, "next": 7000 + 3 * end if more else None})


@DRIVERS
def test_get_members_follows_the_servers_cursor_and_stops_on_the_last_page(driver: str) -> None:
    fake = FakeMembers(2500)
    assert call(driver, fake, "get_members", "a/b") == fake.members
    assert fake.cursors == [None, "10000", "13000"]  # three pages of 1,000, then no more


@DRIVERS
def test_get_members_of_a_one_page_channel_asks_once(driver: str) -> None:
    fake = FakeMembers(3)
    assert call(driver, fake, "get_members", "a/b") == fake.members
    assert fake.cursors == [None]


class FakeHistory:
    """A channel's history, paged with ``next`` positions ``{"epoch", "offset"}``."""

    def __init__(self, count: int) -> None:
        self.messages = [{"offset": i + 1, "data": i} for i in range(count)]
        self.queries: list[dict[str, str]] = []
        self.done = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert not self.done, "asked for a page after the last"
        assert request.url.raw_path.split(b"?")[0] == b"/v1/apps/chat%20room/channels/feed/history"
        query = dict(request.url.params)
        self.queries.append(query)
        start = int(query.get("since_offset", 0))
        page = self.messages[start : start + int(query["limit"])]
        end = start + len(page)
        more = end < len(self.messages)
        self.done = not more
        position = {"epoch": "e1", "offset": end}
        return reply(
            {"messages": page, "epoch": "e1", "offset": end, "next": position if more else None}
        )


@DRIVERS
def test_get_history_follows_the_next_position_and_stops_on_the_last_page(driver: str) -> None:
    fake = FakeHistory(2001)
    assert call(driver, fake, "get_history", "feed") == fake.messages
    first = {"limit": "1000", "reverse": "false"}
    assert fake.queries == [
        first,
        {**first, "since_epoch": "e1", "since_offset": "1000"},
        {**first, "since_epoch": "e1", "since_offset": "2000"},
    ]


@DRIVERS
def test_history_is_one_page_from_the_position_given(driver: str) -> None:
    fake = FakeHistory(10)
    page = call(driver, fake, "history", "feed", {"epoch": "e1", "offset": 4}, 3, reverse=True)
    assert page["messages"] == fake.messages[4:7] and page["next"] == {"epoch": "e1", "offset": 7}
    assert fake.queries == [
        {"limit": "3", "reverse": "true", "since_epoch": "e1", "since_offset": "4"}
    ]


@DRIVERS
def test_a_call_posts_msgpack_with_the_apps_secret(driver: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply({"recipients": 2})

    result = call(driver, handler, "disconnect_session", "ann/1", "s 1", revoke=True)
    assert result == {"recipients": 2}
    (request,) = seen
    assert request.method == "POST"
    assert request.url.raw_path == b"/v1/apps/chat%20room/users/ann%2F1/sessions/s%201/disconnect"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/msgpack"
    assert codec.unpack(request.content) == {"revoke": True}


@DRIVERS
def test_a_refusal_raises_the_servers_code(driver: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply({"code": "unknown_app", "message": "no such app"}, status=404)

    with pytest.raises(ServerAPIError) as error:
        call(driver, handler, "stats")
    assert (error.value.status, error.value.code, error.value.message) == (
        404,
        "unknown_app",
        "no such app",
    )


@DRIVERS
def test_a_reply_that_is_not_the_server_apis_is_a_bad_response(driver: str) -> None:
    with pytest.raises(ServerAPIError) as error:
        call(driver, lambda request: httpx.Response(502, text="<html>"), "broadcast", "e")
    assert (error.value.status, error.value.code) == (502, "bad_response")


@DRIVERS
def test_an_unreachable_server_raises_unreachable(driver: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServerAPIError) as error:
        call(driver, handler, "send", "lobby", "news")
    assert (error.value.status, error.value.code) == (None, "unreachable")
    assert isinstance(error.value.__cause__, httpx.ConnectError)


def test_the_old_import_path_and_the_package_root_give_the_same_classes() -> None:
    assert server_api.ServerAPI is rtcore.ServerAPI is ServerAPI
    assert server_api.AsyncServerAPI is rtcore.AsyncServerAPI is AsyncServerAPI
    assert server_api.ServerAPIError is rtcore.ServerAPIError is ServerAPIError
