"""Numbers in the config are bounded, with check-config messages (issue 20, finding 10): a
400-digit ``burst`` raised OverflowError out of check-config and out of a SIGHUP reload, and a
limiter with ``rate = 1e-17`` was accepted although its ``retry_after`` cannot be encoded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from rtcore import config as cfg
from rtcore.cli import _reload, main
from rtcore.config.checks import MAX_NUMBER
from rtcore.server.server import Server

HUGE = 10**400


def errors(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(raw)
    return list(caught.value.errors)


def limiter(**fields: Any) -> dict[str, Any]:
    return {"apps": [{"name": "a", "rate_limits": [{"name": "r", "rate": 10, **fields}]}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (limiter(burst=HUGE), "apps[0].rate_limits[0].burst: must be at most 1000000000"),
        (limiter(rate=HUGE), "apps[0].rate_limits[0].rate: must be at most 1000000000"),
        (limiter(per_seconds=HUGE), "apps[0].rate_limits[0].per_seconds: must be at most"),
        (limiter(rate=1e-17, burst=1), "apps[0].rate_limits[0].rate: 1e-17 per 1 s is slower"),
        (limiter(rate=1, per_seconds=86_401), "is slower than the slowest limiter"),
        ({"limits": {"connect_burst_per_ip": HUGE}}, "limits.connect_burst_per_ip: must be at"),
        ({"limits": {"handshake_timeout": HUGE}}, "limits.handshake_timeout: must be at most"),
        ({"limits": {"max_history_bytes": MAX_NUMBER + 1}}, "must be at most 9007199254740991"),
        ({"apps": [{"name": "a", "revocation_ttl": HUGE}]}, "apps[0].revocation_ttl: must be at"),
        (
            {
                "apps": [
                    {
                        "name": "a",
                        "channels": [{"pattern": "*", "history_size": 1, "history_ttl": HUGE}],
                    }
                ]
            },
            "apps[0].channels[0].history_ttl: must be at most",
        ),
        (
            {"apps": [{"name": "a", "session": {"secret": "s" * 32, "leeway": HUGE}}]},
            "apps[0].session.leeway: must be a number of seconds from 0 to",
        ),
        ({"broker": {"max_queued": HUGE}}, "broker.max_queued: must be at most"),
    ],
)
def test_huge_and_tiny_numbers_are_config_errors(raw: dict[str, Any], message: str) -> None:
    found = errors(raw)
    assert any(message in e for e in found), found


def test_the_slowest_limiter_still_encodes_its_retry_after() -> None:
    conf = cfg.from_dict(limiter(rate=1, per_seconds=86_400))
    rule = conf.apps[0].rate_limits[0]
    assert rule.refill_per_second == 1 / 86_400  # a day for one token: 86,400,000 ms


def test_check_config_prints_the_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.toml"
    path.write_text(
        f'[[apps]]\nname = "a"\n[[apps.rate_limits]]\nname = "r"\nrate = 5\nburst = {HUGE}\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "apps[0].rate_limits[0].burst: must be at most 1000000000" in err


def test_a_sighup_reload_of_a_huge_number_keeps_the_old_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text(
        f'[[apps]]\nname = "a"\n[[apps.rate_limits]]\nname = "r"\nrate = 5\nburst = {HUGE}\n'
    )
    server = Server(cfg.Config(port=0, api_port=None))
    server.config_path = path
    before = server.config
    with caplog.at_level(logging.ERROR, "rtcore"):
        _reload(server)
    assert server.config is before
    assert [r.getMessage() for r in caplog.records] == [
        "SIGHUP: apps[0].rate_limits[0].burst: must be at most 1000000000: "
        "the old settings stay in force"
    ]
    assert not any(r.exc_info for r in caplog.records)
