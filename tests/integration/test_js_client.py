"""The JavaScript client's tests, run from pytest: Node (node --test) and Chromium.

They need Node >= 18, ``npm ci`` in clients/js and (for the browser tests) Debian's
``chromium``. Without them these tests skip with the reason, unless RTCORE_REQUIRE_BROWSER=1
(as .ci/run sets): then a missing tool is a failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
CHROMIUM = os.environ.get("RTCORE_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("RTCORE_REQUIRE_BROWSER") == "1"


def _node_problem() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed (Node >= 18 runs the JavaScript client's tests)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < 18:
        return f"node {version.strip()} is older than 18"
    if not (JS / "node_modules" / "@msgpack" / "msgpack").is_dir():
        return "clients/js/node_modules is missing: run `npm ci` in clients/js"
    return None


def _browser_problem() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if not (JS / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is missing: run `npm ci` in clients/js"
    return None


def _require(*problems: str | None) -> None:
    for problem in problems:
        if problem is not None:
            if REQUIRED:
                pytest.fail(f"RTCORE_REQUIRE_BROWSER=1, but {problem}")
            pytest.skip(problem)


def _node(args: list[str], timeout: float) -> str:
    """Run ``node args`` in clients/js; fail with its output unless it exits 0.

    node runs in its own process group, killed whole on timeout: servers and browsers it
    started go with it.
    """
    env = {**os.environ, "RTCORE_PYTHON": sys.executable}
    proc = subprocess.Popen(
        ["node", *args],
        cwd=JS,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"node {' '.join(args)} ran over {timeout} s:\n{output}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
    assert proc.returncode == 0, f"node {' '.join(args)} exited {proc.returncode}:\n{output}"
    return output


def _node_tests(args: list[str], timeout: float) -> None:
    """``node --test``; it exits 0 with no tests at all, so check that some ran and passed."""
    output = _node(["--test", *args], timeout)
    assert re.search(r"^# pass [1-9]", output, re.M), output
    assert re.search(r"^# fail 0$", output, re.M), output


def _files(pattern: str) -> list[str]:
    files = sorted(str(p.relative_to(JS)) for p in JS.glob(pattern))
    assert files, f"no {pattern} in clients/js"
    return files


@pytest.mark.slow
def test_node_client_conformance_and_live_server_tests() -> None:
    _require(_node_problem())
    _node_tests(_files("test/*.test.mjs"), timeout=240)


def test_served_copies_of_the_client_are_current() -> None:
    _require(_node_problem())
    _node(["scripts/vendor.mjs", "--check"], timeout=60)


def test_typescript_declarations_typecheck() -> None:
    _require(_node_problem())
    _node(["node_modules/typescript/bin/tsc", "-p", "test-types"], timeout=120)


@pytest.mark.slow
def test_browser_end_to_end_in_chromium() -> None:
    _require(_node_problem(), _browser_problem())
    _node_tests(_files("test-browser/*.test.mjs"), timeout=300)
