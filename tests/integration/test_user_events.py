"""User events and the server API: who receives what, sign-out, and every HTTP refusal."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
import trio

from rtcore import CloseCode, Server
from rtcore.client import ConnectionClosedError, MemberEvent, UserEvent, open_client
from rtcore.config import AppConfig
from rtcore.core.auth import SessionSettings
from rtcore.operations import USER_EVENT_KINDS
from rtcore.protocol import frames as f
from rtcore.server_api import AsyncServerAPI, ServerAPI, ServerAPIError
from tests.integration.conftest import StartServer, url
from tests.integration.raw import RawClient

SECRET = "j" * 32
SERVER_SECRET = "server-secret-" + "x" * 32
APP = AppConfig(
    "app",
    session=SessionSettings(key=SECRET),
    server_secret=SERVER_SECRET,
    end_sessions_on_password_change=True,
    profile_updates_member=True,
)


def token(user: str, sid: str) -> str:
    return jwt.encode({"sub": user, "sid": sid, "exp": 4_000_000_000}, SECRET, "HS256")


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server(
        apps=(APP, AppConfig("other", server_secret="o" * 32), AppConfig("no-api"))
    )


def api_url(server: Server) -> str:
    host, port = server.api_addresses[0]
    return f"http://{host}:{port}"


async def signed_in(server: Server, user: str, sid: str) -> RawClient:
    raw = await RawClient.connect(server.addresses[0])
    welcome = await raw.hello(token=token(user, sid))
    assert isinstance(welcome, f.Welcome) and welcome.user == user
    return raw


async def drain(raw: RawClient, marker: str = "marker") -> list[Any]:
    """The frames the connection received before the ``marker`` broadcast (sent last)."""
    frames = []
    while True:
        frame = await raw.recv()
        if isinstance(frame, f.Msg) and frame.event == marker:
            return frames
        frames.append(frame)


async def test_each_kind_reaches_exactly_the_users_connections(server: Server) -> None:
    with trio.fail_after(20):
        alice1 = await signed_in(server, "alice", "s-a1")
        alice2 = await signed_in(server, "alice", "s-a2")
        bob = await signed_in(server, "bob", "s-b")
        anon = await RawClient.connect(server.addresses[0])
        await anon.hello()
        everyone = (alice1, alice2, bob, anon)
        async with AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend:
            sync = ServerAPI(api_url(server), "app", SERVER_SECRET)
            kinds = [k for k in USER_EVENT_KINDS if k not in ("signout", "password_change")]
            kinds.append("custom_kind")  # extensible
            for i, kind in enumerate(kinds):
                session = {"id": "s-a1", "device": "phone"}
                data = {"id": "alice", "name": f"Alice {i}"}
                # through the HTTP API as any backend would, then through the library
                # (alternately the async and the sync one)
                body = {"user": "alice", "event": kind, "session": session, "data": data}
                status, result = await http(
                    server, "POST", "/v1/apps/app/user-events", json.dumps(body).encode(), AUTH
                )
                assert (status, result) == (
                    200,
                    {"delivered": 2, "ended_sessions": [], "closed": 0},
                )
                if i % 2:
                    result = await backend.publish_user_event("alice", kind, session, data)
                else:
                    result = await trio.to_thread.run_sync(
                        sync.publish_user_event, "alice", kind, session, data
                    )
                assert result == {"delivered": 2, "ended_sessions": [], "closed": 0}
                await backend.broadcast(f"marker-{i}")
                for raw in everyone:
                    got = [
                        fr for fr in await drain(raw, f"marker-{i}") if isinstance(fr, f.UserEvent)
                    ]
                    if raw in (alice1, alice2):
                        assert [(e.kind, e.session, e.user) for e in got] == [
                            (kind, session, data)
                        ] * 2
                    else:
                        assert got == []
            sync.close()


async def test_a_signout_ends_that_users_session_only_not_another_users_with_the_same_id(
    server: Server,
) -> None:
    with trio.fail_after(20):
        alice = await signed_in(server, "alice", "s-1")
        bob = await signed_in(server, "bob", "s-1")  # session ids are unique per user only
        async with AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend:
            result = await backend.publish_user_event("alice", "signout", {"id": "s-1"})
            assert result == {"delivered": 1, "ended_sessions": ["s-1"], "closed": 1}
            assert (await alice.closed()).code == CloseCode.SESSION_ENDED
            await bob.send(t="members", id=1, ch="x")
            assert isinstance(await bob.recv(), f.Ok)  # bob's s-1 is untouched
            assert isinstance(await signed_in(server, "bob", "s-1"), RawClient)
            refused = await RawClient.connect(server.addresses[0])
            await refused.send(t="hello", v=1, token=token("alice", "s-1"))
            assert (await refused.closed()).code == CloseCode.SESSION_ENDED


async def test_signout_ends_the_session_and_its_token(server: Server) -> None:
    with trio.fail_after(20):
        other_tab = await signed_in(server, "alice", "s-2")
        ended: list[ConnectionClosedError] = []
        async with AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend:
            with pytest.raises(ConnectionClosedError) as info:
                async with open_client(
                    url(server), token=token("alice", "s-1"), backoff_initial=0.01
                ) as tab:
                    tab.on_session_ended(ended.append)
                    events = tab.events()
                    result = await backend.publish_user_event("alice", "signout", {"id": "s-1"})
                    assert result == {"delivered": 2, "ended_sessions": ["s-1"], "closed": 1}
                    first = await events.__anext__()
                    assert isinstance(first, UserEvent) and first.kind == "signout"
                    async for _ in events:  # ends with the session's close
                        pass
            assert info.value.code == CloseCode.SESSION_ENDED
            assert [e.code for e in ended] == [CloseCode.SESSION_ENDED]
            # the revoked token is refused; the user's other session is untouched
            again = await RawClient.connect(server.addresses[0])
            await again.send(t="hello", v=1, token=token("alice", "s-1"))
            assert (await again.closed()).code == CloseCode.SESSION_ENDED
            (event,) = [
                fr for fr in await _until_marker(backend, other_tab) if isinstance(fr, UserEvent)
            ]
            assert event.kind == "signout" and event.session == {"id": "s-1"}


MARKERS = iter(range(1_000_000))


async def _until_marker(backend: AsyncServerAPI, raw: RawClient) -> list[Any]:
    marker = f"marker-{next(MARKERS)}"
    await backend.broadcast(marker)
    return await drain(raw, marker)


async def test_password_change_ends_the_other_sessions_and_profile_update_shows_in_channels(
    server: Server,
) -> None:
    with trio.fail_after(20):
        keep = await signed_in(server, "alice", "keep")
        other = await signed_in(server, "alice", "other")
        watcher = await RawClient.connect(server.addresses[0])
        await watcher.hello()
        await keep.send(t="join", id=1, ch="room", echo=False)
        await watcher.send(t="join", id=1, ch="room", echo=False)
        async with AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend:
            await backend.publish_user_event(
                "alice", "profile_update", {"id": "keep"}, {"name": "Alice B."}
            )
            frames = await _until_marker(backend, watcher)
            updates = [
                fr for fr in frames if isinstance(fr, MemberEvent) and fr.kind == "member_update"
            ]
            assert [u.member["data"] for u in updates] == [{"name": "Alice B."}]
            result = await backend.publish_user_event("alice", "password_change", {"id": "keep"})
            assert result["ended_sessions"] == ["other"] and result["closed"] == 1
            assert (await other.closed()).code == CloseCode.SESSION_ENDED
            got = [fr for fr in await _until_marker(backend, keep) if isinstance(fr, UserEvent)]
            assert [e.kind for e in got] == ["profile_update", "password_change"]


async def test_disconnect_user_and_session_and_members_and_stats(server: Server) -> None:
    with trio.fail_after(20):
        a1 = await signed_in(server, "ann", "a-1")
        a2 = await signed_in(server, "ann", "a-2")
        b = await signed_in(server, "ben", "b-1")
        await b.send(t="join", id=1, ch="room", echo=False)
        await b.recv()
        async with AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend:
            assert await backend.get_members("room") == [
                {"id": b_id(server, "ben"), "user": "ben", "data": None}
            ]
            stats = await backend.stats()
            assert stats == {"connections": 3, "channels": 1, "members": {"room": 1}}
            assert await backend.disconnect_session("ann", "a-1") == {"closed": 1, "revoked": False}
            assert (await a1.closed()).code == CloseCode.DISCONNECTED
            again = await signed_in(server, "ann", "a-1")  # not revoked: welcome again
            assert await backend.disconnect_user("ann") == {"closed": 2}
            for raw in (a2, again):
                assert (await raw.closed()).code == CloseCode.DISCONNECTED
            assert await backend.disconnect_session("ben", "b-1", revoke=True) == {
                "closed": 1,
                "revoked": True,
            }
            assert (await b.closed()).code == CloseCode.SESSION_ENDED


def b_id(server: Server, user: str) -> str:
    (member,) = server.apps["app"].table.user(user).values()
    return member.id


async def test_sends_from_the_backend_are_not_rate_limited_and_reach_all(
    start_server: StartServer,
) -> None:
    from rtcore.core.limits.limiter import Rule

    app = AppConfig("app", server_secret=SERVER_SECRET, rate_limits=(Rule("tight", 1, 60),))
    server = await start_server(apps=(app,))
    with trio.fail_after(20):
        async with (
            open_client(url(server)) as member,
            AsyncServerAPI(api_url(server), "app", SERVER_SECRET) as backend,
        ):
            await member.join("room")
            events = member.events()
            for i in range(20):
                assert (await backend.send("room", "tick", {"i": i, "b": b"\x00\xff"}))[
                    "recipients"
                ] == 1
            got = []
            async for event in events:
                if isinstance(event, f.Msg):
                    got.append(event.data)
                if len(got) == 20:
                    break
            assert got == [{"i": i, "b": b"\x00\xff"} for i in range(20)]  # bytes survive


async def http(
    server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    stream = await trio.open_tcp_stream(*server.api_addresses[0])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"

    async def send() -> None:
        try:
            await stream.send_all(head.encode() + b"\r\n" + body)
        except trio.BrokenResourceError:
            pass  # the server may answer (413) and stop reading before the body ends

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        data = await _read_response(stream)
    await stream.aclose()
    status = int(data.split(b" ")[1])
    return status, json.loads(data[data.find(b"\r\n\r\n") + 4 :])


async def _read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        head_end = data.find(b"\r\n\r\n")
        if head_end > 0:
            length = int(
                next(
                    line.split(b":")[1]
                    for line in data[:head_end].split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            if len(data) >= head_end + 4 + length:
                break
    return data


AUTH = {"Authorization": f"Bearer {SERVER_SECRET}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/v1/apps/app/send", b'{"channel":"r","event":"e"}', {}, 401, "unauthorized"),
        (
            "POST",
            "/v1/apps/app/send",
            b'{"channel":"r","event":"e"}',
            {"Authorization": "Bearer nope"},
            401,
            "unauthorized",
        ),
        ("POST", "/v1/apps/other/send", b'{"channel":"r","event":"e"}', AUTH, 401, "unauthorized"),
        # an unknown app and an app without a server_secret answer as a wrong secret does
        ("POST", "/v1/apps/nope/send", b"{}", AUTH, 401, "unauthorized"),
        ("POST", "/v1/apps/no-api/send", b"{}", AUTH, 401, "unauthorized"),
        ("POST", "/v1/apps/app/send", b"{not json", AUTH, 400, "bad_request"),
        ("POST", "/v1/apps/app/send", b"[1]", AUTH, 400, "bad_request"),
        ("POST", "/v1/apps/app/send", b'{"channel":"r"}', AUTH, 400, "bad_request"),
        ("POST", "/v1/apps/app/send", b'{"channel":5,"event":"e"}', AUTH, 400, "bad_request"),
        (
            "POST",
            "/v1/apps/app/send",
            b'{"channel":"a b","event":"e"}',
            AUTH,
            422,
            "invalid_channel",
        ),
        (
            "POST",
            "/v1/apps/app/send",
            b"x",
            {**AUTH, "Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("POST", "/v1/apps/app/send", b"x" * 2_000_000, AUTH, 413, "payload_too_large"),
        ("GET", "/v1/apps/app/send", b"", AUTH, 405, "method_not_allowed"),
        ("GET", "/v1/nothing", b"", AUTH, 404, "not_found"),
        # a session is named with its user (docs/api.md); the old user-less path is gone
        ("POST", "/v1/apps/app/sessions/s-1/disconnect", b"{}", AUTH, 404, "not_found"),
        ("GET", "/v1/apps/app/channels/r/members?limit=x", b"", AUTH, 400, "bad_request"),
        (
            "POST",
            "/v1/apps/app/user-events",
            b'{"user":"u","event":"signout"}',
            AUTH,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/apps/app/user-events",
            b'{"user":"u","event":"signin","session":{"id":"s","token":"t"}}',
            AUTH,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/apps/app/user-events",
            b'{"user":"u","event":"Sign In!"}',
            AUTH,
            400,
            "bad_request",
        ),
    ],
)
async def test_http_refusals_are_4xx_with_codes(
    server: Server,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    with trio.fail_after(10):
        got_status, payload = await http(server, method, path, body, headers)
        assert (got_status, payload["code"]) == (status, code), payload
        assert payload["message"]
        assert (await http(server, "GET", "/healthz"))[0] == 200  # still serving


async def test_malformed_http_gets_400_and_the_api_keeps_serving(server: Server) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.api_addresses[0])
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        response = await stream.receive_some(4096)
        assert response.startswith(b"HTTP/1.1 400"), response
        await stream.aclose()
        status, payload = await http(server, "GET", "/v1/apps/app/stats", headers=AUTH)
        assert status == 200 and payload["connections"] == 0


def test_the_sync_library_raises_server_api_errors() -> None:
    with (
        ServerAPI("http://127.0.0.1:9", "app", "s") as unreachable,
        pytest.raises(ServerAPIError) as info,
    ):
        unreachable.send("room", "e")
    assert info.value.status is None and info.value.code == "unreachable"
