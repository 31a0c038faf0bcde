"""Configuration: the shipped example, defaults, and errors that name the key and the rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtcore import config as cfg

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_is_valid_and_states_the_defaults() -> None:
    assert cfg.load(ROOT / "rtcore.example.toml") == cfg.Config()


def test_no_file_means_one_default_app_on_loopback() -> None:
    conf = cfg.from_dict({})
    assert (conf.host, conf.port, conf.app_names(), conf.default_app) == (
        "127.0.0.1", 8765, ["default"], "default")


def test_several_apps_need_an_explicit_default() -> None:
    conf = cfg.from_dict({"apps": [{"name": "a"}, {"name": "b"}]})
    assert conf.default_app is None
    conf = cfg.from_dict({"apps": [{"name": "a"}, {"name": "b"}], "server": {"default_app": "b"}})
    assert conf.default_app == "b"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"limits": {"max_channels": 0}}, "limits.max_channels: must be a positive integer"),
        ({"limits": {"max_channels": 1.5}}, "limits.max_channels: must be a positive integer"),
        ({"limits": {"handshake_timeout": -1}}, "limits.handshake_timeout: must be a positive"),
        ({"limits": {"typo": 1}}, "limits.typo: unknown key"),
        ({"server": {"port": 70000}}, "server.port: must be an integer from 0 to 65535"),
        ({"server": {"host": ""}}, "server.host: must be a non-empty string"),
        ({"server": {"default_app": "zz"}}, "server.default_app: 'zz' is not one of the apps"),
        ({"apps": []}, "apps: must be a non-empty array"),
        ({"apps": [{"name": "a b"}]}, "apps[0].name: must be 1-64 characters"),
        ({"apps": [{"name": "a"}, {"name": "a"}]}, "apps: app names must be unique"),
        ({"wat": {}}, "wat: unknown key"),
    ],
)
def test_bad_settings_name_the_key_and_rule(raw: dict[str, object], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        cfg.from_dict(raw)


def test_unreadable_and_invalid_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits\n")
    with pytest.raises(cfg.ConfigError, match="not valid TOML"):
        cfg.load(bad)


def test_check_config_command(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "rtcore.cli", "check-config",
                           str(ROOT / "rtcore.example.toml")], capture_output=True, text=True)
    assert good.returncode == 0 and "ok (1 apps)" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_channels = -3\n")
    out = subprocess.run([sys.executable, "-m", "rtcore.cli", "check-config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "limits.max_channels" in out.stderr
