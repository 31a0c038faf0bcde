"""The core never imports trio: it does no I/O and reads no clock (checked by a scan of its
source and by running a scenario with every clock raising)."""

from __future__ import annotations

import ast
import datetime
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

import rtcore
from rtcore import operations as api
from rtcore.core.auth import ApiKey
from rtcore.core.limits.limiter import Rule

CORE = [
    "rtcore",
    "rtcore.protocol",
    "rtcore.protocol.codec",
    "rtcore.protocol.wsframe",
    "rtcore.protocol.values",
    "rtcore.core.session.session",
    "rtcore.core.session.history",
    "rtcore.core.session.deferred",
    "rtcore.core.session.context",
    "rtcore.core.session.hello",
    "rtcore.core.session.requests",
    "rtcore.core.session.access",
    "rtcore.core.permissions",
    "rtcore.core.channel_tokens",
    "rtcore.core.history",
    "rtcore.engines.redis.keys",
    "rtcore.engines.redis.envelopes",
    "rtcore.engines.redis.scripts",
    "rtcore.core.members",
    "rtcore.core.app",
    "rtcore.core.auth",
    "rtcore.core.restrictions",
    "rtcore.core.membership",
    "rtcore.core.server_channels",
    "rtcore.core.limits.limiter",
    "rtcore.core.limits.admission",
    "rtcore.engines",
    "rtcore.engines.base",
    "rtcore.engines.memory",
    "rtcore.operations",
    "rtcore.protocol.names",
    "rtcore.protocol.close",
    "rtcore.protocol.position",
    "rtcore.protocol.assembly",
    "rtcore.config.load",
    "rtcore.core.outbox",
    "rtcore.core.presence",
    "rtcore.core.member_events",
    "rtcore.core.limits.flush_policy",
    "rtcore.config",
    "rtcore.config.reader",
    "rtcore.config.checks",
    "rtcore.config.editor",
    "rtcore.observe",
    "rtcore.observe.logs",
    "rtcore.observe.metrics",
    "rtcore.observe.log_config",
    "rtcore.workers",
    "rtcore.workers.policy",
]


def test_importing_the_core_leaves_trio_out() -> None:
    code = f"import sys; import {', '.join(CORE)}; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_server_does_import_trio() -> None:  # the check above can tell the difference
    code = "import sys, rtcore; rtcore.Server; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# -- no clock reads: time is passed in (monotonic ``now``, Unix ``wall``) -----------------------

CORE_FILES = sorted(
    p
    for pattern in (
        "protocol/*.py",
        "core/**/*.py",
        "config/*.py",
        "engines/*.py",
        "engines/redis/keys.py",
        "engines/redis/envelopes.py",
        "engines/redis/scripts.py",
        "workers/policy.py",
        "operations.py",
        "observe/events.py",
        "observe/log_config.py",
    )
    for p in (Path(rtcore.__file__).parent).glob(pattern)
)
CLOCK_CALLS = {
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "process_time",
    "clock_gettime",
    "now",
    "utcnow",
    "today",
    "current_time",
}


def clock_reads(source: str) -> list[str]:
    """Clock reads in one module's source: imports of ``time`` and calls of clock functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name == "time" for a in node.names):
            found.append(f"line {node.lineno}: import time")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found.append(f"line {node.lineno}: from time import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in CLOCK_CALLS:
                found.append(f"line {node.lineno}: {ast.unparse(func)}()")
    return found


def test_the_core_modules_read_no_clock() -> None:
    names = {p.relative_to(Path(rtcore.__file__).parent).as_posix() for p in CORE_FILES}
    assert {
        "core/session/session.py",
        "core/members.py",
        "core/app.py",
        "core/limits/limiter.py",
        "core/auth.py",
        "protocol/codec.py",
        "engines/memory.py",
        "core/hooks/breaker.py",
        "core/hooks/answers.py",
        "core/session/hooked.py",
        "core/webhooks.py",
    } <= names
    assert "server/server.py" not in names and "cli.py" not in names
    root = Path(rtcore.__file__).parent
    reads = {p.relative_to(root).as_posix(): clock_reads(p.read_text()) for p in CORE_FILES}
    assert {name: found for name, found in reads.items() if found} == {}


def test_the_clock_scan_sees_a_clock_read() -> None:  # the scan above can fail
    assert clock_reads("import time\nx = time.time()\n") == [
        "line 1: import time",
        "line 2: time.time()",
    ]
    assert clock_reads("import datetime as dt\nx = dt.datetime.now(dt.UTC)\n") == [
        "line 2: dt.datetime.now()"
    ]
    assert clock_reads("from time import monotonic\nmonotonic()\n") == [
        "line 1: from time import ...",
        "line 2: monotonic()",
    ]


def _no_clock(*args: object, **kwargs: object) -> float:
    raise AssertionError("the core read a clock")


class _NoClockDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz: object = None) -> Any:
        raise AssertionError("the core read a clock")

    @classmethod
    def utcnow(cls) -> Any:
        raise AssertionError("the core read a clock")


def test_a_whole_scenario_runs_with_every_clock_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "process_time"):
        monkeypatch.setattr(time, name, _no_clock)
    monkeypatch.setattr(datetime, "datetime", _NoClockDatetime)
    from tests.unit.test_presence_rules import APP
    from tests.unit.test_session import MONO, NOW, World, ok
    from tests.unit.test_session_security import token

    app = attrs.evolve(
        APP,
        api_keys=(ApiKey("k", expires=NOW + 3600),),
        api_key_required=True,
        rate_limits=(Rule("r", 100, 1), Rule("c", 100, 1, scope="connection")),
        session=attrs.evolve(APP.session, expire_connections=True),
    )
    world = World(apps=(app,))
    alice = world.session({"key": "k", "token": token("alice")})
    anon = world.session({"key": "k"})
    for s in (alice, anon):
        ok(s, t="join", id=1, ch="vip-1")
        ok(s, t="send", id=2, ch="vip-1", ev="e", data=1)
        ok(s, t="broadcast", id=3, ev="e")
        ok(s, t="profile", id=4, data={"n": 1})
    ok(alice, t="members", id=5, ch="vip-1")
    ok(alice, t="refresh", id=6, token=token("alice", sid="s2"))
    assert alice.revalidate(NOW) is None
    core = world.apps["a"]
    api.publish_user_event(core, "alice", "signout", {"id": "s2"}, None, MONO, NOW)
    core.sweep(MONO + 10)
    anon.disconnected()
