"""rtcore.server.upgrade: the upgrade request parsed and answered as wsproto's h11-based
handshake did (same statuses, same headers passed on, the same 101), and malformed or
oversized heads refused with a status, never an exception of another kind."""

from __future__ import annotations

import pytest
import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

from rtcore.server import upgrade

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8765\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
)


def request(*extra: bytes, base: bytes = UPGRADE) -> bytes:
    return base + b"".join(line + b"\r\n" for line in extra) + b"\r\n"


def without(name: bytes) -> bytes:
    lines = UPGRADE.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(name + b":"))


def wsproto_answer(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """What wsproto's server handshake made of a request: (101, its headers) or (4xx, [])."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    try:
        ws.receive_data(raw)
        [event] = list(ws.events())
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        return getattr(hint, "status_code", 400), []
    assert isinstance(event, Request)
    return 101, list(event.extra_headers)


def ours(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    end = upgrade.head_end(raw)
    assert end == len(raw)
    try:
        _, headers = upgrade.parse(raw[:end])
    except upgrade.Refused as refused:
        return refused.status, []
    return 101, headers


CASES = [
    request(),
    request(b"Origin: https://a.example", b"Cookie: a=1; b=2", b"X-Forwarded-For: 10.0.0.1"),
    request(b"sec-websocket-protocol: chat", b"Sec-WebSocket-Extensions: permessage-deflate"),
    request(b"X-Empty:", b"X-Spaces:   padded value \t"),
    request(base=UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")),
    request(base=UPGRADE.replace(b"Upgrade: websocket", b"UPGRADE: WebSocket")),
    request(base=UPGRADE.replace(b"GET", b"POST", 1)),
    request(base=without(b"connection")),
    request(base=UPGRADE.replace(b"Connection: Upgrade", b"Connection: close")),
    request(base=without(b"sec-websocket-version")),
    request(base=UPGRADE.replace(b"Version: 13", b"Version: 8")),
    request(base=without(b"sec-websocket-key")),
    request(base=without(b"upgrade")),
    request(base=UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c")),
    request(base=without(b"host")),
    b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
]


@pytest.mark.parametrize("raw", CASES)
def test_the_same_answer_and_headers_as_wsprotos_handshake(raw: bytes) -> None:
    assert ours(raw) == wsproto_answer(raw)


def test_a_wrong_version_is_426_with_the_version_this_server_speaks() -> None:
    """RFC 6455 §4.2.2: 426 and Sec-WebSocket-Version: 13 (400 when none was given)."""
    for raw, status in [
        (request(base=UPGRADE.replace(b"Version: 13", b"Version: 8")), 426),
        (request(base=without(b"sec-websocket-version")), 400),
    ]:
        with pytest.raises(upgrade.Refused) as refused:
            upgrade.parse(raw)
        response = refused.value.response()
        assert response.startswith(b"HTTP/1.1 %d " % status)
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_the_101_is_wsprotos_and_rfc_6455s() -> None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    ws.receive_data(request())
    list(ws.events())
    ours = upgrade.switching_protocols(KEY)
    assert ours == ws.send(AcceptConnection())
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n" in ours  # §1.3


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    key, headers = upgrade.parse(
        request(
            b"ORIGIN:  https://a.example  ",
            base=UPGRADE.replace(b"Sec-WebSocket-Key", b"SEC-WEBSOCKET-KEY"),
        )
    )
    assert key == KEY
    assert (b"origin", b"https://a.example") in headers
    assert all(name == name.lower() for name, _ in headers)


def test_connection_and_upgrade_tokens_may_come_in_several_headers() -> None:
    raw = request(
        b"Connection: Upgrade",
        base=UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive"),
    )
    assert upgrade.parse(raw)[0] == KEY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (request(b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), "several Sec-WebSocket-Key"),
        (request(base=UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0", 1)), "needs HTTP/1.1"),
        (request(base=UPGRADE.replace(b"HTTP/1.1", b"HTTP/2.0", 1)), "needs HTTP/1.1"),
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "malformed HTTP request line"),
        (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", "malformed HTTP request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "malformed HTTP request line"),
        (b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", "malformed HTTP header line"),
        (b"GET / HTTP/1.1\r\nno colon here\r\nHost: x\r\n\r\n", "malformed HTTP header line"),
        (b"GET / HTTP/1.1\r\nbad line X: y\r\nHost: x\r\n\r\n", "malformed HTTP header line"),
    ],
)
def test_malformed_and_ambiguous_requests_are_400(raw: bytes, message: str) -> None:
    with pytest.raises(upgrade.Refused) as refused:
        upgrade.parse(raw)
    assert refused.value.status == 400 and message in refused.value.message
    assert refused.value.response().startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_head_end_finds_the_blank_line_with_either_line_end() -> None:
    raw = request() + b"\x82\x80frames"
    assert upgrade.head_end(raw) == len(request())
    assert upgrade.head_end(raw, len(request()) - 4) == len(request())
    assert upgrade.head_end(request()[:-1]) == -1
    assert upgrade.head_end(b"GET / HTTP/1.1\nHost: x\n\nrest") == len(
        b"GET / HTTP/1.1\nHost: x\n\n"
    )
    assert upgrade.head_end(b"GET / HTTP/1.1\nHost: x\n\n\r\n\r\n") == 24


def test_bare_lf_line_ends_are_accepted_like_h11() -> None:
    raw = request().replace(b"\r\n", b"\n")
    assert ours(raw) == wsproto_answer(raw)
    assert ours(raw)[0] == 101


def test_the_too_large_answer_is_431() -> None:
    assert upgrade.TOO_LARGE.response().startswith(b"HTTP/1.1 431 ")
    assert str(upgrade.MAX_HEAD).encode() in upgrade.TOO_LARGE.response()


@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused_with_a_status(junk: bytes) -> None:
    raw = junk + b"\r\n\r\n"
    try:
        upgrade.parse(raw[: upgrade.head_end(raw)])
    except upgrade.Refused as refused:
        assert refused.status in upgrade.REASONS


@given(
    st.lists(
        st.tuples(
            st.from_regex(rb"\A[A-Za-z][-A-Za-z0-9]{0,10}\Z"), st.from_regex(rb"\A[ -~]{0,20}\Z")
        ),
        max_size=6,
    )
)
def test_extra_headers_come_through_as_wsproto_passed_them(
    fields: list[tuple[bytes, bytes]],
) -> None:
    raw = request(*(name + b": " + value for name, value in fields))
    assert ours(raw) == wsproto_answer(raw)
