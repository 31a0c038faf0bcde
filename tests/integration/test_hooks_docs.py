"""docs/hooks.md's examples run: the Flask backend (its three hooks and webhook receiver)
served by werkzeug against a real rtcore configured as the page shows, and the JavaScript
signature check under Node.js on a request rtcore signed."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
from werkzeug.serving import make_server

from rtcore import CloseCode
from rtcore import config as cfg
from rtcore.core.hooks.signing import signed_headers
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient
from tests.integration.test_docs import SECRET_ENV

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
SECRET = SECRET_ENV["RTCORE_HOOKS_SECRET"]


def block(lang: str) -> str:
    (code,) = re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    return str(code)


@pytest.fixture
def flask_backend(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RTCORE_HOOKS_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "docs_backend"}
    exec(compile(block("py"), "docs/hooks.md", "exec"), namespace)
    server = make_server("127.0.0.1", 0, namespace["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    namespace["port"] = server.server_port
    yield namespace
    server.shutdown()
    thread.join(timeout=10)


async def reply(raw: RawClient, rid: int) -> Any:
    for _ in range(100):
        frame = await raw.recv()
        if getattr(frame, "id", None) == rid:
            return frame
    raise AssertionError("no reply")


async def test_the_flask_backend_of_the_docs_runs_the_hooks_and_takes_webhooks(
    start_server: StartServer, flask_backend: Any
) -> None:
    toml = block("toml").replace("127.0.0.1:8000", f"127.0.0.1:{flask_backend['port']}")
    (chat,) = cfg.from_dict(tomllib.loads(toml), env=SECRET_ENV).apps
    server = await start_server(apps=(chat,))
    with trio.fail_after(30):
        refused = await RawClient.connect(server.addresses[0])
        await refused.send(t="hello", v=1)
        closed = await refused.closed()
        assert (closed.code, closed.reason) == (
            CloseCode.CONNECT_REFUSED,
            "no_session: sign in first",
        )

        ann = await RawClient.connect(server.addresses[0], headers=[(b"cookie", b"session=s-ann")])
        welcome = await ann.hello()
        assert welcome.user == "ann"
        await ann.send(t="join", id=1, ch="team-red")
        assert (await reply(ann, 1)).TYPE == "ok"
        await ann.send(t="join", id=2, ch="team-blue")
        denied = await reply(ann, 2)
        assert (denied.code, denied.message) == ("not_in_team", "ask your team lead")
        await ann.send(t="members", id=3, ch="team-red")
        assert (await reply(ann, 3)).data["members"][0]["info"] == {"role": "member"}
        await ann.send(t="send", id=4, ch="team-red", ev="say", data={"text": "  hi  "})
        assert (await reply(ann, 4)).TYPE == "ok"
        await ann.send(t="send", id=5, ch="team-red", ev="say", data={"text": "   "})
        assert (await reply(ann, 5)).code == "empty"
        events = flask_backend["EVENTS"]
        for _ in range(200):  # the webhook batch leaves within batch_window (0.2 s)
            if any(e["name"] == "client_message" for e in events):
                break
            await trio.sleep(0.05)
    said = [e for e in events if e["name"] == "client_message"]
    assert [e["data"] for e in said] == [{"text": "hi"}]  # the publish hook's rewrite
    names = [e["name"] for e in events]
    assert names[:3] == ["connection_opened", "channel_occupied", "member_added"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_javascript_signature_check_accepts_rtcores_signature_only() -> None:
    body = b'{"app":"chat","events":[]}'
    headers = signed_headers(SECRET, 1_700_000_000, body)
    check = f"""
{block("js")}
const body = Buffer.from({body.decode()!r});
const ts = {headers["X-Rtcore-Timestamp"]!r}, sig = {headers["X-Rtcore-Signature"]!r};
console.log([
  verify({SECRET!r}, ts, body, sig, 1700000000),
  verify({SECRET!r}, ts, Buffer.from("x"), sig, 1700000000),
  verify({SECRET!r}, ts, body, sig, 1700009999),
  verify("another-secret-another-secret-32!!", ts, body, sig, 1700000000),
].join(","));
"""
    out = subprocess.run(["node", "-e", check], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "true,false,false,false"
