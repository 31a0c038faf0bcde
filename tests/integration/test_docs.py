"""Every code block of README.md and docs/*.md runs (or parses) as written, so the docs cannot
drift from the code.

- ```python blocks run as scripts. Addresses 127.0.0.1:8765 (clients) and 127.0.0.1:8766
  (server API) are those of a server the test starts with the config the README shows (its
  ```toml blocks, beside the embedded ``default`` app); a block that starts its own
  ``rtcore.Server`` gets two free ports instead. ``CHAT_SERVER_SECRET`` is set, as the README
  tells its reader to.
- ```toml blocks are complete config files that ``rtcore check-config`` accepts.
- Every ``rtcore serve | check-config | token`` command in any block (shell, systemd unit) and
  the Dockerfile's command parse with rtcore's own command line.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from rtcore import Config, Server
from rtcore import config as cfg
from rtcore.cli import build_parser
from rtcore.config import AppConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SECRET_ENV = {
    "CHAT_SERVER_SECRET": "a-server-secret-of-at-least-32-chars!",
    "RTCORE_REDIS_URL": "redis://:password@10.0.0.5:6379/0",
    "CHAT_JWT_SECRET": "a-jwt-secret-of-at-least-32-characters",
    "RTCORE_HOOKS_SECRET": "a-hooks-secret-of-at-least-32-chars!",  # docs/hooks.md
}
RTCORE_COMMAND = re.compile(r"(?:^|[\s/])rtcore ((?:serve|check-config|token)\b[^\n&|;]*)")


def blocks(lang: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(id, language, code) of every fenced block, in document order."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for i, match in enumerate(FENCE.finditer(text)):
            if lang is None or match.group(1) == lang:
                yield f"{doc.relative_to(ROOT)}#{i}", match.group(1), match.group(2)


PYTHON = list(blocks("python"))


def readme_apps() -> tuple[AppConfig, ...]:
    """The apps of the README's config blocks."""
    apps: list[AppConfig] = []
    for id_, _, code in blocks("toml"):
        if id_.startswith("README.md"):
            apps += cfg.from_dict(tomllib.loads(code), env=SECRET_ENV).apps
    return tuple(a for a in apps if a.name != "default")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_script(code: str, ws_port: int, api_port: int) -> str:
    code = code.replace("127.0.0.1:8765", f"127.0.0.1:{ws_port}")
    code = code.replace("127.0.0.1:8766", f"127.0.0.1:{api_port}")
    code = code.replace("port=8765", f"port={ws_port}").replace("port=8766", f"port={api_port}")
    # the embedding example's own ports (beside a quick-start server)
    code = code.replace("port=8775", f"port={ws_port}").replace("port=8776", f"port={api_port}")
    code = code.replace("127.0.0.1:8775", f"127.0.0.1:{ws_port}")
    code = code.replace("127.0.0.1:8776", f"127.0.0.1:{api_port}")
    with trio.fail_after(60):
        out = await trio.run_process(
            [sys.executable, "-c", code],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**_environ(), **SECRET_ENV},
        )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return str(out.stdout.decode())


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


async def start_docs_server(nursery: trio.Nursery) -> Server:
    server = Server(
        Config(
            host="127.0.0.1",
            port=0,
            api_port=0,
            apps=(AppConfig("default"), *readme_apps()),
            default_app="default",
        )
    )
    await nursery.start(server.serve)
    return server


def test_the_docs_have_the_blocks_this_test_expects() -> None:
    ids = [id_ for id_, _, _ in PYTHON]
    assert any(i.startswith("README.md") for i in ids) and any(i.startswith("docs/") for i in ids)
    assert readme_apps(), "the README shows the config its server-API example needs"


def test_embedding_examples_stay_off_the_quick_start_servers_ports() -> None:
    """The reader keeps ``rtcore serve`` running (8765, 8766) while trying these."""
    embedding = [(i, c) for i, _, c in PYTHON if "rtcore.Server(" in c]
    assert embedding
    for id_, code in embedding:
        ports = re.findall(r"\bport=(\d+)", code)
        assert ports and not {"8765", "8766"} & set(ports), (id_, ports)


@pytest.mark.parametrize(
    ("id_", "code"), [(i, c) for i, _, c in PYTHON], ids=[i for i, *_ in PYTHON]
)
async def test_python_block_runs(id_: str, code: str, nursery: trio.Nursery) -> None:
    if "rtcore.Server(" in code:  # it serves by itself
        printed = await run_script(code, free_port(), free_port())
    else:
        server = await start_docs_server(nursery)
        printed = await run_script(code, server.addresses[0][1], server.api_addresses[0][1])
        server.shutdown()
    if "carol was refused the DM" in code:  # docs/auth.md: what it prints is what it says
        assert printed == auth_guide_output(), printed
    if "bob got" in code and "carol" not in code:  # the README tour: as it promises
        assert "bob got chat {'text': 'hi'}" in printed
        assert "bob got chat {'text': 'psst'}" in printed
        assert "ann got Msg" in printed


def auth_guide_output() -> str:
    """The ```text block docs/auth.md shows after its script: what the script prints."""
    text = (ROOT / "docs" / "auth.md").read_text(encoding="utf-8")
    return text.split("It prints:\n\n```text\n", 1)[1].split("```", 1)[0]


async def test_the_readme_tour_works_pasted_into_the_trio_repl(nursery: trio.Nursery) -> None:
    (tour,) = [c for i, _, c in PYTHON if i.startswith("README.md") and "bob got" in c]
    assert tour.rstrip().endswith("trio.run(main)")
    pasted = tour.rstrip().removesuffix("trio.run(main)") + "\nawait main()\n"
    server = await start_docs_server(nursery)
    code = pasted.replace("127.0.0.1:8765", f"127.0.0.1:{server.addresses[0][1]}")
    with trio.fail_after(60):
        out = await trio.run_process(
            [sys.executable, "-m", "trio"],
            stdin=code.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    printed = out.stdout.decode() + out.stderr.decode()
    assert "Traceback" not in printed, printed[-3000:]
    assert "bob got chat {'text': 'psst'}" in printed, printed[-3000:]
    server.shutdown()


TOML = list(blocks("toml"))


@pytest.mark.parametrize(("id_", "code"), [(i, c) for i, _, c in TOML], ids=[i for i, *_ in TOML])
def test_toml_block_is_a_valid_config(id_: str, code: str) -> None:
    cfg.from_dict(tomllib.loads(code), env=SECRET_ENV)


COMMANDS = [
    (f"{id_}:{m.group(1).strip()}", m.group(1))
    for id_, _, code in blocks()
    for m in RTCORE_COMMAND.finditer(code.replace("\\\n", " "))
]


def test_the_docs_show_rtcore_commands() -> None:
    assert any("serve" in c for _, c in COMMANDS) and any("check-config" in c for _, c in COMMANDS)


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_rtcore_command_in_the_docs_parses(command: str) -> None:
    words = [w for w in shlex.split(command) if not w.startswith("$")]
    build_parser().parse_args(words)  # argparse exits (SystemExit) on anything it rejects


def test_the_dockerfile_runs_rtcore_as_a_non_root_user_with_a_command_that_parses() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    entry = json.loads(next(line[11:] for line in final_stage if line.startswith("ENTRYPOINT ")))
    command = json.loads(next(line[4:] for line in final_stage if line.startswith("CMD ")))
    assert entry == ["rtcore"]
    args = build_parser().parse_args(command)
    assert (args.command, args.host, args.api_host) == ("serve", "0.0.0.0", "0.0.0.0")


async def test_the_backend_token_example_mints_tokens_the_server_accepts(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/api.md's realtime_token, run as written: the server admits its token as that user
    and session (sub, sid, exp as the docs say)."""
    from rtcore.client import open_client

    (code,) = [c for i, _, c in PYTHON if "def realtime_token" in c]
    (toml,) = [c for i, _, c in TOML if i.startswith("docs/api.md") and "CHAT_JWT_SECRET" in c]
    secret = "a-jwt-secret-of-at-least-32-characters"
    monkeypatch.setenv("CHAT_JWT_SECRET", secret)
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    token = namespace["realtime_token"]("u42", "s-1")  # type: ignore[operator]
    conf = cfg.from_dict(tomllib.loads(toml), env={"CHAT_JWT_SECRET": secret})
    server = Server(Config(host="127.0.0.1", port=0, api_port=None, apps=conf.apps))
    await nursery.start(server.serve)
    address = f"ws://127.0.0.1:{server.addresses[0][1]}/"
    async with open_client(address, app="chat", token=token) as client:
        assert client.welcome is not None and client.welcome.user == "u42"
        await client.join("lobby")
        (member,) = server.members("chat", "lobby")
        assert member["user"] == "u42"
        # the sid claim is the session a backend disconnects by
        assert server.disconnect_session("chat", "u42", "other")["closed"] == 0
        assert server.disconnect_session("chat", "u42", "s-1")["closed"] == 1
    server.shutdown()
