"""Values are checked where they enter (protocol.md §4.3.1), so every output path can encode
what was accepted: WebSocket fan-out and listings (msgpack), the server API (JSON and msgpack).

The first tests are the regressions of issue 8's crash 1, each named after what broke."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given, settings

from rtcore import CloseCode, Config, Server
from rtcore.client import open_client
from rtcore.config import AppConfig
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from rtcore.server_api import AsyncServerAPI
from tests.integration.conftest import StartServer, url
from tests.integration.raw import RawClient
from tests.unit.test_values import (
    accepted_profile,
    as_json,
    as_msgpack,
    deep,
    nest,
    valid_values,
)

SERVER_SECRET = "s" * 40
AUTH = {"Authorization": f"Bearer {SERVER_SECRET}"}


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server(apps=(AppConfig("default", server_secret=SERVER_SECRET),))


async def http(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    stream = await trio.open_tcp_stream(*server.api_addresses[0])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    await stream.send_all(head.encode() + b"\r\n" + body)
    return await read_response(stream)


async def read_response(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, rest
        rest += chunk
    return int(lines[0].split(" ")[1]), headers, rest[:length]


async def list_members(server: Server, channel: str, accept: str = "") -> list[dict[str, Any]]:
    """The channel's members through the server API, as JSON (default) or msgpack."""
    headers = {**AUTH, "Accept": accept} if accept else AUTH
    status, _, body = await http(
        server, "GET", f"/v1/apps/default/channels/{channel}/members", b"", headers
    )
    assert status == 200, body
    payload = msgpack.unpackb(body, strict_map_key=False) if accept else json.loads(body)
    members: list[dict[str, Any]] = payload["members"]
    return members


async def joined(server: Server, channel: str, **hello: Any) -> RawClient:
    raw = await RawClient.connect(server.addresses[0])
    assert isinstance(await raw.hello(**hello), f.Welcome)
    await raw.send(t="join", id=1, ch=channel, echo=False)
    assert await raw.recv() == f.Ok(1, {"joined": True})
    return raw


async def reply(raw: RawClient, request_id: int) -> Any:
    """The reply to ``request_id`` (pushes before it are skipped)."""
    while True:
        frame = await raw.recv()
        if isinstance(frame, f.Ok | f.Err) and frame.id == request_id:
            return frame


def assert_invalid_data(frame: Any, request_id: int, where: str) -> None:
    assert isinstance(frame, f.Err), frame
    assert (frame.id, frame.code) == (request_id, "invalid_data"), frame
    assert frame.message.startswith(where), frame.message


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


# -- crash 1: a profile the JSON path could not encode ended Server.serve ---------------------


async def test_a_profile_with_a_bin_key_no_longer_ends_the_server_when_listed_as_json(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        bystander = await joined(server, "room", profile={"name": "bob"})
        attacker = await RawClient.connect(server.addresses[0])
        await attacker.send_bytes(msgpack.packb({"t": "hello", "v": 1, "profile": {b"k": 1}}))
        closed = await attacker.closed()
        assert closed.code == CloseCode.HELLO_EXPECTED
        assert closed.reason.startswith("hello: profile: map keys must be strings or integers")
        # the same profile as an update, after a valid hello
        attacker = await joined(server, "room")
        await attacker.send_bytes(msgpack.packb({"t": "profile", "id": 2, "data": {b"k": 1}}))
        assert_invalid_data(await reply(attacker, 2), 2, "data: map keys must be strings")
        listed = await list_members(server, "room")
        assert [m["data"] for m in listed] == [{"name": "bob"}, None]
        assert [m["data"] for m in await list_members(server, "room", "application/msgpack")] == [
            {"name": "bob"},
            None,
        ]
        await bystander.send(t="broadcast", id=2, ev="still-here")
        assert (await reply(bystander, 2)).data["recipients"] == 2
    no_errors_logged(caplog)


async def test_a_profile_nested_1000_deep_no_longer_ends_the_server_when_listed_as_json(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        bystander = await joined(server, "room")
        attacker = await RawClient.connect(server.addresses[0])
        await attacker.send_bytes(msgpack.packb({"t": "hello", "v": 1, "profile": nest(1000)}))
        closed = await attacker.closed()
        assert closed.code == CloseCode.HELLO_EXPECTED
        assert closed.reason == (
            "hello: profile[0][0][0][0][0][0][0]...[0][0][0][0][0][0][0][0][0]: "
            "arrays and maps may nest at most 32 levels deep"
        )
        attacker = await joined(server, "room")
        await attacker.send(t="profile", id=2, data=nest(1000))
        assert_invalid_data(await reply(attacker, 2), 2, "data[0][0]")
        assert [m["data"] for m in await list_members(server, "room")] == [None, None]
        await bystander.send(t="members", id=3, ch="room")
        assert len((await reply(bystander, 3)).data["members"]) == 2
    no_errors_logged(caplog)


async def test_a_profile_update_nested_1022_deep_no_longer_closes_the_sender_with_1011(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """It was refused by nobody, then failed to encode in the member_update fan-out: the sender
    was closed with 1011 and the others never heard its member_leave (a ghost member)."""
    with trio.fail_after(10):
        bystander = await joined(server, "room")
        sender = await joined(server, "room")
        assert isinstance(await bystander.recv(), f.MemberEvent)  # the sender's member_join
        await sender.send(t="profile", id=2, data=nest(1022))
        assert_invalid_data(await reply(sender, 2), 2, "data[0]")
        await sender.send(t="profile", id=3, data=nest(31, {"ok": True}))  # 32 levels: fine
        assert await reply(sender, 3) == f.Ok(3, {"channels": 1})
        update = await bystander.recv()
        assert isinstance(update, f.MemberEvent) and update.kind == "member_update"
        assert update.member["data"] == nest(31, {"ok": True})
        await sender.aclose()
        leave = await bystander.recv()
        assert isinstance(leave, f.MemberEvent) and leave.kind == "member_leave"
        assert leave.member["id"] == update.member["id"]
    no_errors_logged(caplog)


async def test_a_hello_profile_nested_1021_deep_no_longer_closes_other_members_listings_with_1011(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The hello accepted it and the join's member_join could still encode it, but every
    ``members`` reply (two levels deeper) failed: the requester was closed with 1011."""
    with trio.fail_after(10):
        bystander = await joined(server, "room")
        attacker = await RawClient.connect(server.addresses[0])
        await attacker.send(t="hello", v=1, profile=nest(1021))
        assert (await attacker.closed()).code == CloseCode.HELLO_EXPECTED
        await bystander.send(t="members", id=2, ch="room")
        page = await reply(bystander, 2)
        assert isinstance(page, f.Ok) and len(page.data["members"]) == 1
    no_errors_logged(caplog)


async def test_send_and_broadcast_data_beyond_the_rules_get_invalid_data(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        sender = await joined(server, "room")
        other = await joined(server, "room")
        bad: list[tuple[bytes, str]] = [
            (msgpack.packb(nest(33)), "data[0]"),
            (msgpack.packb({b"bin-key": 1}), "data: map keys"),
            (msgpack.packb({"t": msgpack.ExtType(5, b"x")}), "data.t: msgpack ext type 5"),
            (msgpack.packb([float("nan")]), "data[0]: NaN"),
            (msgpack.packb({"at": msgpack.Timestamp(1)}), "data.at: a msgpack timestamp"),
            (msgpack.packb({1: "a", "1": "b"}), "data: keys 1 and '1'"),
        ]
        rid = 10
        for data, where in bad:
            for head in (
                {"t": "send", "id": rid, "ch": "room", "ev": "e"},
                {"t": "broadcast", "id": rid + 1, "ev": "e"},
            ):
                # splice the raw data in, so that the test's own msgpack cannot alter it
                frame = msgpack.packb({**head, "data": None})[:-1] + data
                await sender.send_bytes(frame)
                assert_invalid_data(await reply(sender, head["id"]), head["id"], where)
            rid += 2
        await sender.send(t="send", id=99, ch="room", ev="fine", data={1: b"\x00", "a": [1.5]})
        assert (await reply(sender, 99)).data["recipients"] == 2
        msg = await other.recv()
        assert isinstance(msg, f.Msg) and msg.data == {1: b"\x00", "a": [1.5]}
    no_errors_logged(caplog)


async def test_a_value_within_the_rules_is_listed_and_delivered_by_every_path(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    profile = {"b": b"\x00\xff", 7: nest(30, -(2**63)), "big": 2**64 - 1, "f": -0.5, "s": "é"}
    as_json = {"b": "AP8=", "7": nest(30, -(2**63)), "big": 2**64 - 1, "f": -0.5, "s": "é"}
    with trio.fail_after(10):
        member = await joined(server, "room", profile=profile)
        listed = await list_members(server, "room")
        assert [m["data"] for m in listed] == [as_json]
        listed = await list_members(server, "room", "application/msgpack")
        assert [m["data"] for m in listed] == [profile]
        await member.send(t="members", id=2, ch="room")
        assert (await reply(member, 2)).data["members"][0]["data"] == profile
    no_errors_logged(caplog)


# -- the server API: caller input never gets a 500 --------------------------------------------

DEEP_JSON = b'{"channel": "r", "event": "e", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/apps/default/send", DEEP_JSON, 400, "bad_request"),
        (
            "/v1/apps/default/send",
            b'{"channel":"r","event":"e","data":' + b"9" * 4000 + b"}",
            400,
            "invalid_data",
        ),
        (
            "/v1/apps/default/broadcast",
            b'{"event":"e","data":[-' + b"9" * 4000 + b"]}",
            400,
            "invalid_data",
        ),
        (
            "/v1/apps/default/send",
            b'{"channel":"r","event":"e","data":{"n":NaN}}',
            400,
            "invalid_data",
        ),
        ("/v1/apps/default/send", b'{"channel":"r","event":"\\ud800"}', 422, "invalid_event"),
        ("/v1/apps/default/broadcast", b'{"event":"e","data":["\\udfff"]}', 400, "invalid_data"),
        (
            "/v1/apps/default/user-events",
            b'{"user":"u","event":"signin","session":{"id":"\\ud800"}}',
            400,
            "invalid_data",
        ),
        (
            "/v1/apps/default/user-events",
            b'{"user":"\\ud800","event":"signin"}',
            400,
            "bad_request",
        ),
        ("/v1/apps/default/channels/r/members?limit=%C2%B2", b"", 400, "bad_request"),
        ("/v1/apps/default/channels/r/members?after=" + "9" * 4000, b"", 400, "bad_request"),
        ("/v1/apps/default/channels/r/members?limit=2&after=%F0%9F%98%80", b"", 400, "bad_request"),
        ("/v1/apps/default/users/%ED%A0%80/disconnect", b"", 200, None),  # decoded as U+FFFD
        ("/v1/apps/default/users/u1/sessions/%ED%A0%80/disconnect", b"{}", 200, None),
    ],
)
async def test_the_server_api_answers_caller_input_with_4xx_never_500(
    server: Server,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: bytes,
    status: int,
    code: str | None,
) -> None:
    method = "GET" if "/members" in path else "POST"
    with trio.fail_after(10):
        got, _, payload = await http(server, method, path, body, JSON)
        answer = json.loads(payload)
        assert (got, answer.get("code")) == (status, code), answer
        assert await list_members(server, "r") == []  # still serving
    no_errors_logged(caplog)


async def test_a_user_event_secret_is_found_at_any_depth_and_in_any_case(server: Server) -> None:
    cases = [
        ({"data": {"profile": {"Password": "x"}}}, "data.profile.Password"),
        (
            {"data": {"devices": [{"name": "a"}, {"ACCESS-TOKEN": "t"}]}},
            "data.devices[1]['ACCESS-TOKEN']",
        ),
        ({"session": {"id": "s", "meta": {"refreshToken": "t"}}}, "session.meta.refreshToken"),
        ({"data": {"Secret": 1}}, "data.Secret"),
    ]
    with trio.fail_after(10):
        for extra, where in cases:
            body = json.dumps({"user": "u", "event": "signin", **extra}).encode()
            status, _, payload = await http(
                server, "POST", "/v1/apps/default/user-events", body, JSON
            )
            answer = json.loads(payload)
            assert (status, answer["code"]) == (400, "bad_request"), answer
            assert answer["message"] == f"{where}: secrets are never sent to clients; leave it out"
        body = json.dumps({"user": "u", "event": "signin", "data": {"token_count": 3}}).encode()
        status, _, payload = await http(server, "POST", "/v1/apps/default/user-events", body, JSON)
        assert status == 200, payload  # only the listed names, not every key containing one


async def test_an_unknown_app_and_a_wrong_secret_get_the_same_401(
    start_server: StartServer,
) -> None:
    server = await start_server(
        apps=(AppConfig("default", server_secret=SERVER_SECRET), AppConfig("no-api"))
    )
    with trio.fail_after(10):
        answers = set()
        for path, headers in [
            ("/v1/apps/default/stats", {"Authorization": "Bearer wrong"}),
            ("/v1/apps/default/stats", {}),
            ("/v1/apps/nope/stats", AUTH),
            ("/v1/apps/nope/stats", {}),
            ("/v1/apps/no-api/stats", AUTH),
            ("/v1/apps/no-api/stats", {"Authorization": "Bearer wrong"}),
        ]:
            status, _, payload = await http(server, "GET", path, b"", headers)
            answers.add((status, payload))
        assert len(answers) == 1, answers
        ((status, payload),) = answers
        assert status == 401 and json.loads(payload)["code"] == "unauthorized"
        assert (await http(server, "GET", "/v1/apps/default/stats", b"", AUTH))[0] == 200


async def test_content_length_with_transfer_encoding_gets_400_and_the_connection_closes(
    server: Server,
) -> None:
    """RFC 9112 §6.1. h11 lets Transfer-Encoding win and would keep the connection open: a
    front proxy that trusted Content-Length would then see a smuggled second request."""
    body = b'{"event": "e"}'
    smuggled = (
        b"GET /v1/apps/default/stats HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {SERVER_SECRET}\r\n\r\n".encode()
    )
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    request = (
        b"POST /v1/apps/default/broadcast HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {SERVER_SECRET}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(chunked)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunked
        + smuggled
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.api_addresses[0])
        await stream.send_all(request)
        status, headers, payload = await read_response(stream)
        assert status == 400 and headers.get("connection") == "close", headers
        assert json.loads(payload)["code"] == "bad_request"
        rest = b""
        while chunk := await stream.receive_some(65536):  # no second response: closed
            rest += chunk
        assert rest == b""
        await stream.aclose()


async def test_the_in_process_api_and_the_library_refuse_invalid_data(server: Server) -> None:
    from rtcore.operations import ApiError
    from rtcore.server_api import ServerAPIError

    for call in (
        lambda: server.send("default", "r", "e", {b"k": 1}),
        lambda: server.broadcast("default", "e", nest(40)),
        lambda: server.publish_user_event("default", "u", "signin", data={"x": float("inf")}),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert (info.value.status, info.value.code) == (400, "invalid_data")
    host, port = server.api_addresses[0]
    with trio.fail_after(10):
        async with AsyncServerAPI(f"http://{host}:{port}", "default", SERVER_SECRET) as backend:
            with pytest.raises(ServerAPIError) as error:
                await backend.send("r", "e", {"at": msgpack.Timestamp(5)})
            assert (error.value.status, error.value.code) == (400, "invalid_data")
            assert "data.at: a msgpack timestamp" in error.value.message


# -- property: whatever is accepted is listed and delivered by every path ---------------------


def _small(limit: int) -> Any:
    return lambda v: len(codec.pack(v)) <= limit


@settings(max_examples=25, deadline=None)
@given(
    profile=deep(valid_values()).filter(accepted_profile).filter(_small(4000)),
    data=deep(valid_values()).filter(accepted_profile).filter(_small(4000)),  # also a profile
)
def test_any_accepted_value_is_listed_and_delivered_by_every_path(profile: Any, data: Any) -> None:
    # Its own trio loop per example: hypothesis examples cannot share pytest-trio fixtures.
    async def scenario() -> None:
        app = AppConfig("default", server_secret=SERVER_SECRET)
        server = Server(Config(host="127.0.0.1", port=0, api_port=0, apps=(app,)))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            with trio.fail_after(20):
                await every_path(server, profile, data)
            server.shutdown()

    trio.run(scenario)


async def every_path(server: Server, profile: Any, data: Any) -> None:
    host, port = server.api_addresses[0]
    async with (
        open_client(url(server), profile=profile) as sender,
        open_client(url(server)) as receiver,
        AsyncServerAPI(f"http://{host}:{port}", "default", SERVER_SECRET) as backend,
    ):
        await receiver.join("room")
        await sender.join("room")
        for expected in (profile, data):  # the hello's profile, then an update
            listed = {m["id"]: m["data"] for m in await receiver.get_members("room")}
            assert listed[sender.id] == as_msgpack(expected)
            listed = {m["id"]: m["data"] for m in await backend.get_members("room")}
            assert listed[sender.id] == as_msgpack(expected)
            listed = {m["id"]: m["data"] for m in await list_members(server, "room")}
            assert listed[sender.id] == as_json(expected)
            await sender.update_profile(data)
        events = receiver.events()
        await sender.send("room", "client", data)
        await backend.send("room", "msgpack", data)
        body = json.dumps({"channel": "room", "event": "json", "data": as_json(data)}).encode()
        status, _, reply_body = await http(server, "POST", "/v1/apps/default/send", body, JSON)
        assert status == 200, reply_body
        got = {}
        async for event in events:
            if isinstance(event, f.Msg):
                got[event.event] = event.data
            if len(got) == 3:
                break
        assert got == {
            "client": as_msgpack(data),
            "msgpack": as_msgpack(data),
            "json": as_json(data),
        }


async def test_a_response_that_cannot_be_encoded_is_a_logged_500_and_the_connection_goes_on(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Intake makes this impossible for values; a bug must still not end the server."""
    from rtcore import operations as api
    from rtcore.server.http import api as server_http

    index = next(i for i, r in enumerate(server_http.ROUTES) if r[2] is server_http._stats)
    method, pattern, _ = server_http.ROUTES[index]
    broken = (method, pattern, lambda *_: api.Outcome({"oops": object()}))
    routes = list(server_http.ROUTES)
    routes[index] = broken
    monkeypatch.setattr(server_http, "ROUTES", routes)
    request = (
        "GET /v1/apps/default/stats HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {SERVER_SECRET}\r\n\r\n"
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*server.api_addresses[0])
        for accept in ("application/json", "application/msgpack"):
            await stream.send_all(
                request.replace("\r\n\r\n", f"\r\nAccept: {accept}\r\n\r\n").encode()
            )
            status, headers, body = await read_response(stream)
            assert status == 500 and headers["content-type"] == accept
            answer = json.loads(body) if accept == "application/json" else codec.unpack(body)
            assert answer["code"] == "internal_error"
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
        assert (await read_response(stream))[0] == 200
        await stream.aclose()
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in logged] == ["server API: cannot encode a 200 response"] * 2


async def test_a_string_that_is_not_utf8_makes_the_frame_undecodable_4000(server: Server) -> None:
    """protocol.md §1: msgpack refuses invalid UTF-8 while decoding, so such a string never
    reaches the value check; the whole message is not a frame."""
    with trio.fail_after(10):
        raw = await joined(server, "room")
        frame = msgpack.packb({"t": "send", "id": 2, "ch": "room", "ev": "e", "data": None})
        await raw.send_bytes(frame[:-1] + b"\xa2\xff\xfe")  # a 2-byte str that is not UTF-8
        closed = await raw.closed()
        assert closed.code == CloseCode.PROTOCOL_ERROR and "utf-8" in closed.reason
