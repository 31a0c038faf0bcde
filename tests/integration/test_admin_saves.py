"""The settings page's saves and state under cheap bad inputs and concurrency (issue 20,
finding 9): every bad input a 400 with check-config's kind of message (never a 500), a stale
save a 409 (never a lost change), symlinks and modes kept, and the state parsed once per change
of the file, off the event loop."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit
import trio

from rtcore import Server
from rtcore import config as cfg
from rtcore.server.http import config_file
from tests.integration.test_admin import CONFIG, call, put_settings, served

__all__ = ["served"]  # the fixture, used by name

SETTINGS = "/admin/api/apps/chat/settings"


async def version_of(server: Server) -> str:
    version = (await call(server, "GET", "/admin/api/state")).json()["version"]
    assert isinstance(version, str) and version
    return version


async def put_raw(server: Server, body: str) -> httpx.Response:
    return await call(
        server, "PUT", SETTINGS, content=body.encode(), headers={"Content-Type": "application/json"}
    )


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BAD_INPUTS = [
    ('{"rate_limits": [{"name": "\\ud800", "rate": 1}]}', "rate_limits[0].name: not a string"),
    ('{"rate_limits": [{"name": ["x"], "rate": 1}]}', "name: must be a non-empty string"),
    ('{"channels": [{"pattern": ["x"]}]}', "pattern: must be a glob"),
    ('{"rate_limits": [{"name": "a", "rate": 1, "operations": [null]}]}', "[0]: must not be null"),
    ('{"channels": [{"pattern": ' + deep(500) + "}]}", "nested too deeply"),
    ('{"rate_limits": [{"name": "a", "rate": ' + "9" * 4200 + "}]}", "beyond 64 bits"),
]


@pytest.mark.parametrize(("change", "reason"), BAD_INPUTS)
async def test_a_bad_input_is_a_400_with_the_reason_and_nothing_changes(
    served: tuple[Server, Path], change: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, path = served
    before = path.read_text()
    body = change[:-1] + f', "version": "{await version_of(server)}"}}'
    with caplog.at_level(logging.ERROR):
        response = await put_raw(server, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_settings"
    assert any(reason in error for error in response.json()["errors"]), response.json()
    assert path.read_text() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


async def test_a_read_only_config_directory_is_a_clear_refusal(
    served: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server, path = served
    before = path.read_text()

    def read_only(*args: Any, **kwargs: Any) -> tuple[int, str]:  # tests run as root: chmod
        raise PermissionError(13, "Permission denied")  # would not stop a write

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with caplog.at_level(logging.ERROR):
        response = await put_settings(server, "chat", {"enabled": False})
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "config_unwritable"
    assert "Permission denied" in response.json()["message"]
    assert path.read_text() == before and server.apps["chat"].settings.enabled
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_save_from_a_stale_version_is_refused_and_the_other_change_kept(
    served: tuple[Server, Path],
) -> None:
    server, path = served
    loaded = await version_of(server)
    first = await call(server, "PUT", SETTINGS, {"session_required": True, "version": loaded})
    assert first.status_code == 200, first.text
    second = await call(server, "PUT", SETTINGS, {"enabled": False, "version": loaded})
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "stale_settings"
    assert second.json()["version"] == first.json()["version"] == await version_of(server)
    saved = cfg.load(path).apps[0]
    assert saved.session_required and saved.enabled  # the first change kept, the second not
    assert server.apps["chat"].settings.enabled


async def test_a_hand_edit_of_the_file_makes_the_page_stale(served: tuple[Server, Path]) -> None:
    server, path = served
    loaded = await version_of(server)
    path.write_text(path.read_text() + "\n# an operator's note\n")
    response = await call(server, "PUT", SETTINGS, {"enabled": False}, headers={"If-Match": loaded})
    assert response.status_code == 409 and response.json()["code"] == "stale_settings"
    assert "# an operator's note" in path.read_text() and cfg.load(path).apps[0].enabled


async def test_a_save_without_a_version_is_refused(served: tuple[Server, Path]) -> None:
    server, path = served
    before = path.read_text()
    response = await call(server, "PUT", SETTINGS, {"enabled": False})
    assert response.status_code == 428 and response.json()["code"] == "version_required"
    assert path.read_text() == before


async def save_limiter(server: Server, name: str, loaded: str, statuses: dict[str, int]) -> None:
    change = {"rate_limits": [{"name": name, "rate": 5}], "version": loaded}
    statuses[name] = (await call(server, "PUT", SETTINGS, change)).status_code


async def test_concurrent_saves_from_one_version_keep_exactly_one(
    served: tuple[Server, Path],
) -> None:
    server, path = served
    for round_ in range(4):
        loaded = await version_of(server)
        statuses: dict[str, int] = {}

        async with trio.open_nursery() as nursery:
            for limiter in (f"a{round_}", f"b{round_}"):
                nursery.start_soon(save_limiter, server, limiter, loaded, statuses)
        assert sorted(statuses.values()) == [200, 409], statuses
        (won,) = [name for name, status in statuses.items() if status == 200]
        assert [r.name for r in cfg.load(path).apps[0].rate_limits] == [won]
        assert [r.name for r in server.apps["chat"].settings.rate_limits] == [won]


async def test_a_symlinked_config_stays_a_symlink_with_its_mode(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    (tmp_path / "etc").mkdir()
    target = tmp_path / "etc" / "rtcore.toml"
    target.write_text(CONFIG)
    target.chmod(0o640)
    owner = (1234, 1234) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(target, *owner)  # as root (the tests' CI), a file of another user
    link = tmp_path / "rtcore.toml"
    link.symlink_to(target)
    server = Server(cfg.load(link))
    server.config_path = link
    await nursery.start(server.serve)
    response = await put_settings(server, "chat", {"session_required": True})
    assert response.status_code == 200, response.text
    assert link.is_symlink() and link.resolve() == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (target.stat().st_uid, target.stat().st_gid) == owner
    assert cfg.load(link).apps[0].session_required
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["rtcore.toml"]  # no leftovers


async def test_the_state_parses_the_file_once_per_change_off_the_event_loop(
    served: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, path = served
    parses: list[str] = []
    loop_thread = threading.current_thread()

    def counted(parse: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            on_loop = threading.current_thread() is loop_thread
            parses.append("on the event loop" if on_loop else "in a thread")
            return parse(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(tomllib, "loads", counted(tomllib.loads))
    monkeypatch.setattr(tomlkit, "parse", counted(tomlkit.parse))
    for _ in range(3):
        state = (await call(server, "GET", "/admin/api/state")).json()
        assert state["apps"][0]["settings"]["rate_limits"][0]["name"] == "per-second"
    assert parses == ["in a thread"]  # the first poll after the change; not every poll
    # a change of the file (by hand here, same size, maybe within one mtime tick) is seen at
    # the next poll: parsed once more
    path.write_text(path.read_text().replace("rate = 50", "rate = 51"))
    for _ in range(2):
        state = (await call(server, "GET", "/admin/api/state")).json()
        assert state["apps"][0]["settings"]["rate_limits"][0]["rate"] == 51
    assert parses == ["in a thread"] * 2


async def test_a_save_waits_for_the_files_lock_within_a_bound(
    served: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, path = served
    before = path.read_text()
    monkeypatch.setattr(config_file, "LOCK_WAIT", 0.05)
    with path.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another worker's save would
        response = await put_settings(server, "chat", {"enabled": False})
    assert response.status_code == 409 and response.json()["code"] == "config_unwritable"
    assert "stayed locked by another save" in response.json()["message"]
    assert path.read_text() == before
    assert (await put_settings(server, "chat", {"enabled": False})).status_code == 200
