"""Admission from the first byte, the server-wide cap, and the inbound frame budget (sans-IO)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtcore import config as cfg
from rtcore.config import Limits
from rtcore.core.limits.admission import (
    EXPLAINED_REFUSALS_PER_IP,
    RESERVED_FILES,
    Admission,
    InboundBudget,
    connection_cap,
)
from rtcore.protocol import CloseCode


def test_the_server_wide_cap_is_derived_from_the_open_files_limit() -> None:
    assert connection_cap(Limits(), 1024) == 1024 - 64 - RESERVED_FILES
    assert connection_cap(Limits(api_max_connections=10), 256) == 256 - 10 - RESERVED_FILES
    assert connection_cap(Limits(max_connections=5), 1024) == 5  # explicit wins
    assert connection_cap(Limits(), 100) == 1  # never zero


def test_accept_counts_server_wide_until_the_cap() -> None:
    admission = Admission(Limits(max_connections=2))
    assert admission.accept() and admission.accept()
    assert not admission.accept()
    assert admission.open == 2  # a refusal counts nothing
    admission.ended()
    assert admission.accept()


def test_a_reload_changes_the_cap() -> None:
    admission = Admission(Limits(max_connections=1))
    assert admission.accept()
    admission.apply(Limits(max_connections=2))
    assert admission.accept()
    assert not admission.accept()


def test_only_a_few_refusals_per_ip_are_explained_at_a_time() -> None:
    admission = Admission(Limits())
    for _ in range(EXPLAINED_REFUSALS_PER_IP):
        assert admission.explain("a")
    assert not admission.explain("a")
    assert admission.explain("b")  # per IP
    admission.explained("a")
    assert admission.explain("a")
    for _ in range(EXPLAINED_REFUSALS_PER_IP):
        admission.explained("a")
    assert "a" not in admission.explaining


def test_inbound_budget_closes_a_frame_flood_and_refills() -> None:
    budget = InboundBudget(Limits(inbound_frames_per_second=10.0, inbound_frame_burst=5), 0.0)
    assert [budget.charge_frame() for _ in range(5)] == [None] * 5
    close = budget.charge_frame()
    assert close is not None and close.code == CloseCode.INBOUND_FLOOD
    budget = InboundBudget(Limits(inbound_frames_per_second=10.0, inbound_frame_burst=5), 0.0)
    for _ in range(5):
        budget.charge_frame()
    budget.refill(0.1)  # one frame earned
    assert budget.charge_frame() is None
    assert budget.charge_frame() is not None


def test_inbound_budget_bytes() -> None:
    limits = Limits(inbound_bytes_per_second=100.0, inbound_byte_burst=1000)
    budget = InboundBudget(limits, 0.0)
    assert budget.charge_bytes(1000) is None
    assert budget.charge_bytes(1).code == CloseCode.INBOUND_FLOOD  # type: ignore[union-attr]
    budget = InboundBudget(limits, 0.0)
    budget.charge_bytes(1000)
    budget.refill(100.0)  # refills to the burst, not beyond
    assert budget.charge_bytes(1000) is None
    assert budget.charge_bytes(1) is not None
    budget.refill(99.0)  # a clock that goes back earns nothing
    assert budget.charge_bytes(1) is not None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_connections": 0}, "limits.max_connections: must be a positive integer"),
        ({"max_connections": 1.5}, "limits.max_connections: must be a positive integer"),
        ({"api_max_connections": -1}, "limits.api_max_connections: must be a positive integer"),
        ({"api_idle_timeout": 0}, "limits.api_idle_timeout: must be a positive number"),
        ({"inbound_frame_burst": 0}, "limits.inbound_frame_burst: must be a positive integer"),
        ({"inbound_byte_burst": 2.5}, "limits.inbound_byte_burst: must be a positive integer"),
        (
            {"inbound_frames_per_second": float("inf")},
            "limits.inbound_frames_per_second: must be a positive number",
        ),
        (
            {"inbound_bytes_per_second": "fast"},
            "limits.inbound_bytes_per_second: must be a positive number",
        ),
    ],
)
def test_new_limits_are_validated(limits: dict[str, object], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.from_dict({"limits": limits})


def test_new_limits_load() -> None:
    conf = cfg.from_dict(
        {
            "limits": {
                "max_connections": 500,
                "api_max_connections": 8,
                "api_idle_timeout": 5,
                "inbound_frames_per_second": 100,
                "inbound_frame_burst": 400,
                "inbound_bytes_per_second": 1e6,
                "inbound_byte_burst": 2_000_000,
            }
        }
    )
    assert conf.limits.max_connections == 500
    assert conf.limits.api_max_connections == 8
    assert conf.limits.api_idle_timeout == 5.0
    assert conf.limits.inbound_frame_burst == 400


@pytest.mark.parametrize(
    "line",
    ["max_connections = 0", "api_idle_timeout = -1", "inbound_frame_burst = 1.5"],
)
def test_check_config_validates_the_new_limits(tmp_path: Path, line: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[limits]\n{line}\n")
    out = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and f"limits.{line.split()[0]}" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text("[limits]\nmax_connections = 100\napi_idle_timeout = 5\n")
    out = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "check-config", str(good)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
