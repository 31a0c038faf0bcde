"""The JavaScript client installed into a new npm project the way clients/js/README.md says,
and its README example run there, unchanged but for the port, against a real server.

It needs Node >= 18 and npm; npm may reach the registry for ``ws`` (the example's WebSocket
for Node < 22) and ``@msgpack/msgpack``, or take them from its cache (``npm ci`` in clients/js
fills it). Without node it skips like the other JavaScript tests (fails under
RTCORE_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import trio

from rtcore import Config, Server
from tests.integration.test_js_client import JS, _node_problem, _require

README = (JS / "README.md").read_text(encoding="utf-8")
ROOT = JS.parents[1]


def _block(lang: str, containing: str) -> str:
    for match in re.finditer(rf"^ *```{lang}\n(.*?)^ *```", README, re.S | re.M):
        if containing in match.group(1):
            return match.group(1)
    raise AssertionError(f"clients/js/README.md has no ```{lang} block with {containing!r}")


def _install_commands() -> list[list[str]]:
    """The README's install block: each line's command, the clone's path filled in."""
    lines = [line.split("#")[0].strip() for line in _block("sh", "npm pack").splitlines()]
    return [shlex.split(line.replace("path/to/rtcore", str(ROOT))) for line in lines if line]


async def _run(args: list[str], cwd: Path) -> str:
    if args[:2] == ["npm", "install"]:  # quiet, and the cache first (same packages)
        args = [*args, "--no-audit", "--no-fund", "--prefer-offline"]
    with trio.fail_after(240):
        done = await trio.run_process(
            args, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )  # fmt: skip
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output[-3000:]}"
    return output


@pytest.mark.slow
async def test_the_readme_install_and_example_work_in_a_new_npm_project(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    _require(_node_problem(), None if shutil.which("npm") else "npm is not installed")
    commands = _install_commands()
    assert [c[:2] for c in commands] == [["npm", "pack"], ["npm", "install"]]
    app = tmp_path / "app"
    app.mkdir()
    await _run(["npm", "init", "-y"], app)
    for command in commands:
        await _run(command, app)
    installed = app / "node_modules"
    assert not (installed / "rtcore-client").is_symlink()  # installed, not linked to the clone
    assert (installed / "@msgpack" / "msgpack").is_dir()

    server = Server(Config(host="127.0.0.1", port=0, api_port=0))
    await nursery.start(server.serve)
    port = server.addresses[0][1]
    example = _block("js", 'from "rtcore-client"').replace("127.0.0.1:8765", f"127.0.0.1:{port}")
    (app / "example.mjs").write_text(example)
    printed = await _run(["node", "example.mjs"], app)
    assert "{ text: 'hi' }" in printed, printed  # its own chat message, echoed
    assert "data: { name: 'ann' }" in printed, printed  # the member list
    server.shutdown()
