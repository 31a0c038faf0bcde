"""The core never imports trio: it does no I/O and reads no clock."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "rtcore",
    "rtcore.protocol",
    "rtcore.protocol.codec",
    "rtcore.protocol.wsframe",
    "rtcore.session",
    "rtcore.hub",
    "rtcore.app",
    "rtcore.auth",
    "rtcore.limiter",
    "rtcore.admission",
    "rtcore.broker",
    "rtcore.outbox",
    "rtcore.config",
    "rtcore.observe",
    "rtcore.observe.logs",
    "rtcore.observe.metrics",
    "rtcore.logs",
]


def test_importing_the_core_leaves_trio_out() -> None:
    code = f"import sys; import {', '.join(CORE)}; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_server_does_import_trio() -> None:  # the check above can tell the difference
    code = "import sys, rtcore; rtcore.Server; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
