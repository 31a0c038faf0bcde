"""The Realtime settings page's API (/admin on the server-API port), over real HTTP: who may
use it, and that saving validates like check-config, writes the file atomically with its
comments, and applies at once like a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from rtcore import CloseCode, Server
from rtcore import config as cfg
from rtcore.client import RequestError, open_client
from tests.integration.conftest import url
from tests.integration.raw import RawClient
from tests.integration.test_settings import closed_code

ADMIN = "an-admin-secret-of-at-least-32-characters"
CONFIG = f"""# the operators' file
[server]
host = "127.0.0.1"
port = 0
api_port = 0
admin_secret = "{ADMIN}"

[[apps]]
name = "chat"   # the public chat
session_required = false        # signed-in only?

[[apps.rate_limits]]
name = "per-second"   # keep: a comment on a limiter
rate = 50
per_seconds = 1

[apps.session]
secret = "{"s" * 32}"
"""


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> tuple[Server, Path]:
    path = tmp_path / "rtcore.toml"
    path.write_text(CONFIG)
    server = Server(cfg.load(path))
    server.config_path = path
    await nursery.start(server.serve)
    return server, path


def api_url(server: Server) -> str:
    host, port = server.api_addresses[0]
    return f"http://{host}:{port}"


async def call(
    server: Server, method: str, path: str, body: Any = None, secret: str | None = ADMIN, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    headers |= kw.pop("headers", {})
    async with httpx.AsyncClient(base_url=api_url(server)) as http:
        return await http.request(method, path, json=body, headers=headers, **kw)


async def put_settings(server: Server, app: str, change: Any, **kw: Any) -> httpx.Response:
    """A save from the page: with the config file's version the state gave."""
    version = (await call(server, "GET", "/admin/api/state")).json()["version"]
    body = {**change, "version": version} if isinstance(change, dict) else change
    return await call(server, "PUT", f"/admin/api/apps/{app}/settings", body, **kw)


async def test_the_page_is_served_with_a_strict_policy(served: tuple[Server, Path]) -> None:
    server, _ = served
    page = await call(server, "GET", "/admin", secret=None)
    assert page.status_code == 200 and "Realtime settings" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    script = await call(server, "GET", "/admin/admin.js", secret=None)
    assert script.status_code == 200 and "Authorization" in script.text
    assert (await call(server, "GET", "/admin/nope.js", secret=None)).status_code == 404


@pytest.mark.parametrize("secret", [None, "wrong" * 8, ADMIN[:-1]])
async def test_data_needs_the_admin_secret(served: tuple[Server, Path], secret: str | None) -> None:
    server, _ = served
    response = await call(server, "GET", "/admin/api/state", secret=secret)
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"


async def test_without_an_admin_secret_the_page_is_off(nursery: trio.Nursery) -> None:
    server = Server(cfg.Config(host="127.0.0.1", port=0, api_port=0))
    await nursery.start(server.serve)
    response = await call(server, "GET", "/admin/api/state")
    assert response.status_code == 403 and response.json()["code"] == "admin_disabled"


async def test_state_shows_live_stats_apps_channels_and_settings(
    served: tuple[Server, Path],
) -> None:
    server, _ = served
    async with open_client(url(server), app="chat", profile={"name": "ann"}) as ann:
        await ann.join("lobby")
        state = (await call(server, "GET", "/admin/api/state")).json()
        assert state["server"]["connections"] == 1
        (chat,) = state["apps"]
        assert chat["connections"] == 1
        assert chat["top_channels"] == [{"name": "lobby", "members": 1}]
        assert chat["settings"]["rate_limits"] == [
            {"name": "per-second", "rate": 50, "per_seconds": 1}
        ]
        members = await call(server, "GET", "/admin/api/apps/chat/channels/lobby/members")
        assert [m["data"] for m in members.json()["members"]] == [{"name": "ann"}]


async def test_saving_session_required_applies_at_once_and_keeps_comments(
    served: tuple[Server, Path],
) -> None:
    server, path = served
    anon = await RawClient.connect(server.addresses[0])
    await anon.hello(app="chat")
    saved = await put_settings(server, "chat", {"session_required": True})
    assert saved.status_code == 200, saved.text
    assert saved.json()["closed"] == 1
    with trio.fail_after(5):
        assert (await anon.closed()).code == CloseCode.SESSION_MISSING
        assert await closed_code(server, app="chat") == CloseCode.SESSION_MISSING
    text = path.read_text()
    assert "session_required = true        # signed-in only?" in text
    assert "# the operators' file" in text and "# keep: a comment on a limiter" in text
    assert cfg.load(path).apps[0].session_required


async def test_a_bad_value_is_refused_with_check_configs_words_and_nothing_changes(
    served: tuple[Server, Path],
) -> None:
    server, path = served
    before = path.read_text()
    limiters = [{"name": "per-second", "rate": 0, "per_seconds": 1}, {"name": "x", "rate": -1}]
    response = await put_settings(server, "chat", {"rate_limits": limiters})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_settings"
    assert body["errors"] == [
        "apps[0].rate_limits[0].rate: must be a positive number",
        "apps[0].rate_limits[1].rate: must be a positive number",
    ]
    assert path.read_text() == before
    assert server.apps["chat"].settings.rate_limits[0].rate == 50


async def test_a_limiter_added_on_the_page_refuses_clients_with_its_message(
    served: tuple[Server, Path],
) -> None:
    server, _ = served
    limiters = [
        {"name": "tight", "rate": 1, "per_seconds": 60, "error_message": "One a minute, please."},
        {"name": "per-second", "rate": 50, "per_seconds": 1},
    ]
    saved = await put_settings(server, "chat", {"rate_limits": limiters})
    assert saved.status_code == 200, saved.text
    assert [r.name for r in server.apps["chat"].limiter.rules] == ["tight", "per-second"]
    async with open_client(url(server), app="chat") as c:
        await c.join("a")
        with pytest.raises(RequestError) as refused:
            await c.join("b")
        assert (refused.value.code, refused.value.limiter) == ("rate_limited", "tight")
        assert refused.value.message == "One a minute, please."


async def test_a_generated_key_is_shown_once_and_admits_clients(
    served: tuple[Server, Path],
) -> None:
    server, path = served
    change = {"api_keys": [{"generate": True, "name": "web"}], "api_key_required": True}
    saved = await put_settings(server, "chat", change)
    assert saved.status_code == 200, saved.text
    (generated,) = saved.json()["generated_keys"]
    assert generated["name"] == "web" and len(generated["key"]) >= 32
    state = (await call(server, "GET", "/admin/api/state")).json()
    assert generated["key"] not in str(state)  # the page never sees it again
    async with open_client(url(server), app="chat", key=generated["key"]) as c:
        await c.join("lobby")
    with trio.fail_after(5):
        assert await closed_code(server, app="chat") == CloseCode.API_KEY_MISSING
    assert cfg.load(path).apps[0].api_keys[0].key == generated["key"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Origin": "http://evil.example"}, 403), ({"Content-Type": "text/plain"}, 415)],
)
async def test_changes_must_be_same_origin_json(
    served: tuple[Server, Path], headers: dict[str, str], status: int
) -> None:
    server, path = served
    before = path.read_text()
    response = await call(
        server,
        "PUT",
        "/admin/api/apps/chat/settings",
        content=b'{"enabled": false}',
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == status
    assert path.read_text() == before and server.apps["chat"].settings.enabled


async def test_without_a_config_file_settings_are_read_only(nursery: trio.Nursery) -> None:
    conf = cfg.Config(host="127.0.0.1", port=0, api_port=0, admin_secret=ADMIN)
    server = Server(conf)
    await nursery.start(server.serve)
    state = (await call(server, "GET", "/admin/api/state")).json()
    assert state["editable"] is False and state["apps"][0]["settings"]["enabled"] is True
    response = await call(server, "PUT", "/admin/api/apps/default/settings", {"enabled": False})
    assert response.status_code == 409 and response.json()["code"] == "no_config_file"
    assert attrs.asdict(server.apps["default"].settings)["enabled"] is True
