"""``rtcore loadtest`` against real ``rtcore serve`` processes on 127.0.0.1 (and two nodes
over a private Redis for fanout): every scenario at a tiny size, with the JSON result's
counts checked exactly -- every delivery owed counted, refusals reported with their codes --
and the HTML report opened in Chromium with its charts drawn. No timing is checked.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.redisd import free_port, redis_process

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-session-secret-of-at-least-32-characters!"
KEY = "the-keyed-apps-right-key"
STARTUP = 30.0


def config(port: int, api_port: int, redis_url: str | None = None) -> str:
    broker = f'\n[broker]\nkind = "redis"\nurl = "{redis_url}"\n' if redis_url else ""
    return f"""
[server]
host = "127.0.0.1"
port = {port}
api_host = "127.0.0.1"
api_port = {api_port}
default_app = "open"
{broker}
[limits]
heartbeat_interval = 1.0  # pings every second: load clients that do not answer are closed

[[apps]]
name = "open"

[[apps]]
name = "keyed"
[[apps.api_keys]]
name = "k1"
key = "{KEY}"

[[apps]]
name = "signed"
session_required = true
[apps.session]
secret_env = "LT_TEST_SESSION_SECRET"

[[apps]]
name = "limited"
[[apps.rate_limits]]
name = "per-minute"
rate = 1
per_seconds = 60
burst = 5
scope = "connection"
"""


class Node:
    """``rtcore serve --config FILE`` as users run it; ready once /readyz answers 200."""

    def __init__(self, tmp: Path, redis_url: str | None = None) -> None:
        self.port, self.api_port = free_port(), free_port()
        path = tmp / f"node-{self.port}.toml"
        path.write_text(config(self.port, self.api_port, redis_url))
        env = {**os.environ, "LT_TEST_SESSION_SECRET": SECRET}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtcore.cli",
                "serve",
                "--config",
                str(path),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + STARTUP
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rtcore serve did not become ready: {self._stderr()}")
            time.sleep(0.05)
        self.url = f"ws://127.0.0.1:{self.port}/"

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _stderr(self) -> str:
        self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    server = Node(tmp_path_factory.mktemp("loadtest"))
    yield server
    server.stop()


def loadtest(
    tmp: Path, *args: str, env: dict[str, str] | None = None, expect: int = 0
) -> tuple[dict[str, Any], str]:
    """``python -m rtcore.loadtest ARGS`` (JSON only); its result and its stderr."""
    out = tmp / f"result-{time.monotonic_ns()}.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtcore.loadtest",
            *args,
            "--json",
            str(out),
            "--no-html",
            "--duration",
            "60",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == expect, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stderr


def test_connect_opens_every_connection_and_holds_them_answering_pings(
    node: Node, tmp_path: Path
) -> None:
    result, stderr = loadtest(
        tmp_path, node.url, "--scenario", "connect", "-n", "20", "--hold", "2.5", "--workers", "2"
    )
    assert result["connections"] == {"planned": 20, "opened": 20, "open_at_end": 20, "refused": 0}
    assert result["refusals"] == {} and result["closes"] == {}
    assert sum(row["opened"] for row in result["series"]) == 20
    assert max(row["open"] for row in result["series"]) == 20
    assert result["workers"] == 2 and not result["timed_out"]
    # not a terminal: plain progress lines, never rewritten in place
    assert "\r" not in stderr and "] setup:" in stderr and "] hold:" in stderr


def test_a_wrong_api_key_is_refused_with_4011_and_the_right_one_admitted(
    node: Node, tmp_path: Path
) -> None:
    wrong, _ = loadtest(tmp_path, node.url, "--app", "keyed", "--key", "not-the-key", "-n", "6")
    assert wrong["connections"]["opened"] == 0 and wrong["connections"]["refused"] == 6
    assert wrong["refusals"] == {"close 4011": 6}
    missing, _ = loadtest(tmp_path, node.url, "--app", "keyed", "-n", "3")
    assert missing["refusals"] == {"close 4010": 3}
    right, _ = loadtest(
        tmp_path, node.url, "--app", "keyed", "--key-env", "LT_KEY", "-n", "6", env={"LT_KEY": KEY}
    )
    assert right["connections"]["opened"] == 6 and right["refusals"] == {}


def test_fanout_counts_every_delivery_of_a_burst(node: Node, tmp_path: Path) -> None:
    # 12 subscribers over 3 channels (4 each); 9 messages round-robin: 3 per channel
    result, _ = loadtest(
        tmp_path,
        node.url,
        "--scenario",
        "fanout",
        "-n",
        "12",
        "--channels",
        "3",
        "--messages",
        "9",
        "--rate",
        "0",
        "--size",
        "500",
    )
    assert result["messages"] == {"sent": 9, "acked": 9, "refused": 0}
    assert result["deliveries"] == {"received": 36, "expected": 36, "complete": True}
    assert result["latency"]["samples"] == 36
    assert sum(row["deliveries"] for row in result["series"]) == 36


def test_fanout_across_two_nodes_over_redis(tmp_path: Path) -> None:
    with redis_process() as redis:
        a, b = Node(tmp_path, redis.url), Node(tmp_path, redis.url)
        try:
            # 10 subscribers of one channel, 5 on each node; the publisher on the first
            result, _ = loadtest(
                tmp_path,
                a.url,
                b.url,
                "--scenario",
                "fanout",
                "-n",
                "10",
                "--messages",
                "6",
                "--rate",
                "50",
            )
        finally:
            a.stop()
            b.stop()
    assert len(result["plan"]["targets"]) == 2
    assert result["connections"]["opened"] == 11
    assert result["deliveries"] == {"received": 60, "expected": 60, "complete": True}


def test_chat_rooms_each_member_hears_the_others(node: Node, tmp_path: Path) -> None:
    # 12 members in rooms of 4: each message reaches the 3 others
    result, _ = loadtest(
        tmp_path,
        node.url,
        "--scenario",
        "chat",
        "-n",
        "12",
        "--room-size",
        "4",
        "--messages",
        "3",
        "--rate",
        "40",
        "--workers",
        "2",
    )
    assert result["messages"] == {"sent": 36, "acked": 36, "refused": 0}
    assert result["deliveries"] == {"received": 108, "expected": 108, "complete": True}


def test_rate_limited_sends_are_refusals_with_their_code(node: Node, tmp_path: Path) -> None:
    # the "limited" app lets a connection make 5 requests a minute: the join and 4 sends
    result, _ = loadtest(
        tmp_path,
        node.url,
        "--app",
        "limited",
        "--scenario",
        "chat",
        "-n",
        "6",
        "--room-size",
        "3",
        "--messages",
        "7",
        "--rate",
        "0",
    )
    assert result["messages"] == {"sent": 42, "acked": 24, "refused": 18}
    assert result["refusals"] == {"err rate_limited": 18}
    assert result["deliveries"] == {"received": 48, "expected": 48, "complete": True}


def test_churn_counts_one_presence_event_per_member_and_operation(
    node: Node, tmp_path: Path
) -> None:
    # 2 churners x 6 operations (join, profile, leave, twice) reach each of 8 members
    result, _ = loadtest(
        tmp_path,
        node.url,
        "--scenario",
        "churn",
        "-n",
        "8",
        "--churners",
        "2",
        "--messages",
        "6",
        "--rate",
        "30",
    )
    assert result["messages"] == {"sent": 12, "acked": 12, "refused": 0}
    assert result["deliveries"] == {"received": 96, "expected": 96, "complete": True}


def test_storm_drops_everyone_and_all_come_back_with_minted_tokens(
    node: Node, tmp_path: Path
) -> None:
    args = (
        node.url,
        "--app",
        "signed",
        "--scenario",
        "storm",
        "-n",
        "15",
        "--token-secret-env",
        "LT_SECRET",
        "--users",
        "4",
    )
    result, _ = loadtest(tmp_path, *args, env={"LT_SECRET": SECRET})
    assert result["connections"] == {"planned": 15, "opened": 30, "open_at_end": 15, "refused": 0}
    assert result["refusals"] == {} and "recovery" in result["phases"]
    assert result["plan"]["tokens"] == 4
    forged, _ = loadtest(
        tmp_path, *args[:4], "connect", *args[5:], "--hold", "0", env={"LT_SECRET": "x" * 40}
    )
    assert forged["refusals"] == {"close 4014": 15} and forged["connections"]["opened"] == 0


def test_tokens_from_a_command_and_none_without_a_session(node: Node, tmp_path: Path) -> None:
    mint = (
        f"{sys.executable} -m rtcore.cli token --config {tmp_path / 'c.toml'} --app signed "
        "--user $RTCORE_LOADTEST_USER"
    )
    (tmp_path / "c.toml").write_text(config(1, 2))
    result, _ = loadtest(
        tmp_path,
        node.url,
        "--app",
        "signed",
        "-n",
        "4",
        "--users",
        "2",
        "--token-command",
        mint,
        env={"LT_TEST_SESSION_SECRET": SECRET},
    )
    assert result["connections"]["opened"] == 4 and result["plan"]["tokens"] == 2
    anonymous, _ = loadtest(tmp_path, node.url, "--app", "signed", "-n", "4")
    assert anonymous["refusals"] == {"close 4013": 4}


def test_targets_beyond_loopback_are_refused_without_the_owners_flag(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rtcore.loadtest", "ws://192.0.2.10:8765/", "-n", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "--i-own-this-target" in proc.stderr


CHROMIUM = os.environ.get("RTCORE_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = ROOT / "clients" / "js" / "node_modules" / "playwright-core"
CHARTS = ["connections", "deliveries", "latency-over-time", "latency-distribution", "refusals"]


def open_in_chromium(report: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """What Chromium saw of a report (tests/integration/loadtest_report.mjs)."""
    for problem, missing in (
        (f"no Chromium at {CHROMIUM}", not Path(CHROMIUM).exists()),
        ("playwright-core is missing: run `npm ci` in clients/js", not PLAYWRIGHT.is_dir()),
    ):
        if missing:
            if os.environ.get("RTCORE_REQUIRE_BROWSER") == "1":
                pytest.fail(f"RTCORE_REQUIRE_BROWSER=1, but {problem}")
            pytest.skip(problem)
    script = ROOT / "tests" / "integration" / "loadtest_report.mjs"
    args = ["node", str(script), str(report), *([str(screenshot)] if screenshot else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert seen["problems"] == [] and seen["requests"] == []  # offline: nothing fetched
    return seen


def test_the_report_and_the_comparison_open_in_chromium_with_their_charts(
    node: Node, tmp_path: Path
) -> None:
    runs = []
    for n in ("6", "9"):
        out = tmp_path / f"fanout-{n}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "rtcore.cli",
                "loadtest",
                node.url,
                "--scenario",
                "fanout",
                "-n",
                n,
                "--messages",
                "10",
                "--rate",
                "50",
                "--json",
                str(out),
                "--html",
                str(tmp_path / f"fanout-{n}.html"),
                "--quiet",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(out)
    seen = open_in_chromium(tmp_path / "fanout-6.html")
    assert [(i["id"], i["complete"]) for i in seen["images"]] == [(c, True) for c in CHARTS]
    assert all(i["width"] == 800 and i["height"] == 320 for i in seen["images"])
    assert "60 of 60 deliveries owed were counted" in seen["text"]
    compare = tmp_path / "compare.html"
    tool = [sys.executable, "-m", "rtcore.loadtest", "compare", str(runs[0]), str(runs[1])]
    subprocess.run([*tool, "--html", str(compare)], cwd=ROOT, check=True, timeout=120)
    seen = open_in_chromium(compare)
    assert [i["id"] for i in seen["images"] if i["width"] > 0] == CHARTS
    assert "after / before" in seen["headers"]
    # 6 then 9 subscribers of 10 messages: 60 and 90 deliveries, a ratio of 1.50
    assert "deliveries received\t60\t90\t1.50×" in seen["text"]


def test_combine_adds_up_runs_from_several_machines(node: Node, tmp_path: Path) -> None:
    a, _ = loadtest(tmp_path, node.url, "--scenario", "fanout", "-n", "4", "--messages", "5")
    b, _ = loadtest(tmp_path, node.url, "--app", "keyed", "--key", "wrong", "-n", "3")
    b_fanout, _ = loadtest(
        tmp_path,
        node.url,
        "--scenario",
        "fanout",
        "-n",
        "2",
        "--messages",
        "5",
        "--app",
        "keyed",
        "--key",
        KEY,
    )
    paths = []
    for i, result in enumerate((a, b_fanout)):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(result))
    combined_path = tmp_path / "combined.json"
    tool = [sys.executable, "-m", "rtcore.loadtest", "combine", *map(str, paths)]
    subprocess.run([*tool, "--json", str(combined_path)], cwd=ROOT, check=True, timeout=120)
    combined = json.loads(combined_path.read_text())
    assert combined["machines"] == 2
    assert combined["connections"]["opened"] == 5 + 3  # publishers included
    assert combined["deliveries"] == {"received": 30, "expected": 30, "complete": True}
    assert combined["latency"]["samples"] == 30
    assert sum(row["deliveries"] for row in combined["series"]) == 30
    # a connect run is another scenario: not added to a fanout
    (tmp_path / "other.json").write_text(json.dumps(b))
    proc = subprocess.run(
        [
            *tool[:-2],
            str(paths[0]),
            str(tmp_path / "other.json"),
            "--json",
            str(tmp_path / "x.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "cannot combine different scenarios" in proc.stderr


def test_the_c_clients_build_from_the_package_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench's C clients ship inside rtcore (rtcore/loadtest/csrc) and build on demand."""
    import shutil

    from rtcore.loadtest import native

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc): the Python load clients are used")
    monkeypatch.setenv("RTCORE_LOADTEST_BUILD", str(tmp_path / "build"))
    for name in ("csub", "cstorm"):
        assert native.build(name)
        binary = native.binary_path(name)
        assert binary.parent == tmp_path / "build" and os.access(binary, os.X_OK)
        usage = subprocess.run([str(binary)], capture_output=True, text=True, timeout=10)
        assert usage.returncode == 2 and f"usage: {name} HOST PORT N" in usage.stderr


def test_every_loadtest_command_in_the_docs_parses() -> None:
    import re
    import shlex

    from rtcore.loadtest import cli, tools

    text = (ROOT / "docs" / "loadtest.md").read_text()
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
    commands = re.findall(r"^(?:rtcore |python -m rtcore\.)loadtest ([^\n#]*)", shell, re.M)
    assert len(commands) >= 8
    for command in commands:
        words = shlex.split(command)
        parser = tools.build_parser() if words[0] in cli.TOOLS else cli.build_parser()
        parser.parse_args(words)  # argparse exits (SystemExit) on anything it rejects
