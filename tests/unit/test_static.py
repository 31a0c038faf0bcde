"""Plain HTTP on the WebSocket port (rtcore.server.http.static): files, 404, 405, no traversal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h11
import pytest

from rtcore.server.http import static

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "rtcore" / "static"


def _parse(raw: bytes, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
    """The response in ``raw``, parsed by h11 as a client that sent ``method``."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data)
        body += event.data
    return response, body


def _get(target: str, method: str = "GET", extra: str = "") -> tuple[h11.Response, bytes]:
    raw = static.respond(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    assert raw is not None
    return _parse(raw, method.encode())


def _header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name), None)


@pytest.mark.parametrize(
    ("target", "name", "content_type"),
    [
        ("/", "index.html", b"text/html; charset=utf-8"),
        ("/index.html?room=lobby", "index.html", b"text/html; charset=utf-8"),
        ("/rtcore-client.js", "rtcore-client.js", b"text/javascript; charset=utf-8"),
        ("/msgpack.js", "msgpack.js", b"text/javascript; charset=utf-8"),
        ("/demo.js", "demo.js", b"text/javascript; charset=utf-8"),
        ("/demo.css", "demo.css", b"text/css; charset=utf-8"),
    ],
)
def test_get_serves_each_file_with_its_content_type(
    target: str, name: str, content_type: bytes
) -> None:
    response, body = _get(target)
    assert response.status_code == 200
    assert _header(response, b"content-type") == content_type
    assert body == (STATIC / name).read_bytes()
    assert _header(response, b"content-length") == str(len(body)).encode()
    assert _header(response, b"x-content-type-options") == b"nosniff"
    assert _header(response, b"access-control-allow-origin") == b"*"


def test_the_page_has_a_content_security_policy() -> None:
    response, _ = _get("/")
    csp = _header(response, b"content-security-policy")
    assert csp is not None and b"default-src 'self'" in csp


def test_head_sends_the_headers_without_the_body() -> None:
    raw = static.respond(b"HEAD /rtcore-client.js HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw is not None
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert rest == b""
    size = len((STATIC / "rtcore-client.js").read_bytes())
    assert f"content-length: {size}".encode() in head
    assert head.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    "target",
    [
        "/nope",
        "/static/index.html",
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/..%2f..%2fpyproject.toml",
        "//etc/passwd",
        "/rtcore-client.js/../../cli.py",
        "/__init__.py",
        "/demo.js%00",
    ],
)
def test_anything_else_is_404_with_what_this_port_is(target: str) -> None:
    response, body = _get(target)
    assert response.status_code == 404
    assert body == static.ABOUT
    assert b"WebSocket port" in body


def test_other_methods_get_405_with_allow() -> None:
    response, body = _get("/", "POST", "Content-Length: 0\r\n")
    assert response.status_code == 405
    assert _header(response, b"allow") == b"GET, HEAD"
    assert body == static.ABOUT


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # incomplete
    ],
)
def test_upgrades_and_non_http_are_left_to_the_websocket_handshake(raw: bytes) -> None:
    assert static.respond(raw) is None


def test_every_served_file_is_shipped_as_package_data() -> None:
    names = {name for name, _ in static.FILES.values()}
    assert names == {p.name for p in STATIC.iterdir() if p.is_file()}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'rtcore = \[.*"static/\*".*\]', pyproject)


def test_the_served_client_is_the_npm_package_module() -> None:
    """rtcore/static/rtcore-client.js is clients/js/rtcore-client.js, msgpack import aside
    (clients/js/scripts/vendor.mjs writes it; this catches a forgotten `npm run vendor`)."""
    source = (ROOT / "clients" / "js" / "rtcore-client.js").read_text()
    served = (STATIC / "rtcore-client.js").read_text()
    assert served == source.replace('from "@msgpack/msgpack";', 'from "./msgpack.js";')
    assert served != source


def test_the_vendored_msgpack_is_the_locked_version() -> None:
    lock = json.loads((ROOT / "clients" / "js" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/@msgpack/msgpack"]["version"]
    first_line = (STATIC / "msgpack.js").read_text().splitlines()[0]
    assert first_line.startswith(f"// @msgpack/msgpack {version},")
