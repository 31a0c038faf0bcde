"""Configuration: the shipped example, defaults, and errors that name the key and the rule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rtcore import config as cfg
from rtcore.config import AppConfig, ChannelRule
from rtcore.config.model import RULE_CACHE

ROOT = Path(__file__).resolve().parents[2]


def es256_public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


EXAMPLE_ENV = {
    "CHAT_KEY_2026": "k-2026",
    "CHAT_KEY_2027": "k-2027",
    "CHAT_JWT_SECRET": "s" * 32,
    "CHAT_SERVER_SECRET": "z" * 40,
    "DASHBOARD_JWT_PUBLIC_KEY": es256_public_pem(),
}


def test_the_example_config_is_valid_and_means_what_it_says() -> None:
    conf = cfg.load(ROOT / "rtcore.example.toml", env=EXAMPLE_ENV)
    assert conf.limits == cfg.Limits()  # the [limits] it shows are the defaults
    chat, dashboard = conf.apps
    assert [(k.name, k.key) for k in chat.api_keys] == [
        ("web-2026", "k-2026"),
        ("web-2027", "k-2027"),
    ]
    assert chat.api_keys[0].expires == 1801353600.0 and chat.api_keys[1].expires is None
    assert chat.api_key_required and not chat.session_required and not chat.allow_client_broadcast
    assert chat.session is not None and chat.session.key == "s" * 32
    assert [r.name for r in chat.rate_limits] == ["per-second", "joins"]
    assert chat.rate_limits[0].capacity == 40 and chat.rate_limits[1].operations == {"join"}
    assert chat.channel_rule("public-lobby").send == "signed_in"  # type: ignore[union-attr]
    assert chat.presence_policy("public-lobby") == "signed_in"
    assert chat.presence_policy("admin-x") == "nobody"  # no presence key: as join
    assert chat.presence_policy("other") == "anyone"  # no rule: as allow_client_join
    assert chat.channel_rule("admin-x").join == "nobody"  # type: ignore[union-attr]
    assert chat.channel_rule("other") is None
    assert chat.presence_events("public-lobby") and chat.presence_events("other")
    assert not chat.presence_events("live-final")
    assert chat.presence_policy("live-final") == "anyone"  # listing stays as join says
    assert chat.permission("dm#alice,bob", "join") == ("signed_in", True)
    assert chat.permission("room:1", "send") == ("token", False)
    assert chat.permission("room:1", "presence") == ("token", False)  # as join
    assert chat.permission("team:1", "join") == ("granted", False)
    assert chat.session.channels_claim == "channels"
    assert dashboard.session_required and not dashboard.api_key_required
    assert dashboard.session is not None and dashboard.session.algorithms == ("ES256",)
    assert conf.allowed_origins == ("https://chat.example.com",)
    assert [str(n) for n in conf.trusted_proxies] == ["10.0.0.0/8"]
    assert chat.server_secret == "z" * 40 and chat.end_sessions_on_password_change
    assert (conf.api_host, conf.api_port) == ("127.0.0.1", 8766)


def test_defaults_without_a_file_are_the_documented_ones() -> None:
    assert cfg.from_dict({}) == cfg.Config()


def test_no_file_means_one_default_app_on_loopback() -> None:
    conf = cfg.from_dict({})
    assert (conf.host, conf.port, conf.app_names(), conf.default_app) == (
        "127.0.0.1",
        8765,
        ["default"],
        "default",
    )


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
        ({"server": {"host": ""}}, "server.host: must be an address or a non-empty list"),
        ({"server": {"host": []}}, "server.host: must be an address or a non-empty list"),
        ({"server": {"tls_cert": "x.pem"}}, "server.tls_cert, server.tls_key: give both"),
        (
            {"server": {"tls_cert": "nope.pem", "tls_key": "nope.key"}},
            "server.tls_cert: 'nope.pem' is not a readable file",
        ),
        ({"server": {"allowed_origins": "x"}}, "server.allowed_origins: must be an array"),
        (
            {"server": {"trusted_proxies": ["10.0.0.0/33"]}},
            "server.trusted_proxies: '10.0.0.0/33' is not an address or network",
        ),
        (
            {"apps": [{"name": "a", "api_key_required": True}]},
            "apps[0].api_key_required: true, but apps[0].api_keys is empty",
        ),
        (
            {"apps": [{"name": "a", "api_keys": [{"key_env": "NOPE"}]}]},
            "apps[0].api_keys[0].key_env: environment variable NOPE is not set",
        ),
        (
            {"apps": [{"name": "a", "api_keys": [{"key": "k", "key_env": "K"}]}]},
            "apps[0].api_keys[0]: give only one of key, key_env",
        ),
        (
            {"apps": [{"name": "a", "api_keys": [{"key": "k", "expires": "2027"}]}]},
            "apps[0].api_keys[0].expires: must be a TOML date-time with a time zone",
        ),
        (
            {"apps": [{"name": "a", "session_required": True}]},
            "apps[0].session_required: true, but there is no apps[0].session (nor a "
            "apps[0].hooks.connect_url)",
        ),
        (
            {"apps": [{"name": "a", "session": {"secret": "short"}}]},
            "apps[0].session.secret: must be at least 32 characters",
        ),
        (
            {"apps": [{"name": "a", "session": {"algorithms": ["none"], "secret": "s" * 32}}]},
            "apps[0].session.algorithms: must be some of",
        ),
        (
            {"apps": [{"name": "a", "session": {"algorithms": ["HS256", "RS256"]}}]},
            "apps[0].session.algorithms: do not mix HS",
        ),
        (
            {"apps": [{"name": "a", "session": {"algorithms": ["RS256"], "public_key": "x"}}]},
            "apps[0].session: RS*/ES* algorithms need public_key (PEM)",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "p-*", "join": "maybe"}]}]},
            "apps[0].channels[0].join: must be one of anyone, signed_in, nobody",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "p-*", "presence": "members"}]}]},
            "apps[0].channels[0].presence: must be one of anyone, signed_in, nobody",
        ),
        (
            {"apps": [{"name": "a", "rate_limits": [{"name": "r", "rate": 0}]}]},
            "apps[0].rate_limits[0].rate: must be a positive number",
        ),
        (
            {"apps": [{"name": "a", "rate_limits": [{"name": "r", "rate": 0.5}]}]},
            "apps[0].rate_limits[0].burst: needed when rate < 1",
        ),
        (
            {"apps": [{"name": "a", "rate_limits": [{"name": "r", "rate": 1, "scope": "ip"}]}]},
            "apps[0].rate_limits[0].scope: must be client or connection",
        ),
        (
            {
                "apps": [
                    {
                        "name": "a",
                        "rate_limits": [{"name": "r", "rate": 1, "operations": ["leave"]}],
                    }
                ]
            },
            "apps[0].rate_limits[0].operations: must be some of",
        ),
        (
            {
                "apps": [
                    {
                        "name": "a",
                        "rate_limits": [{"name": "r", "rate": 1}, {"name": "r", "rate": 2}],
                    }
                ]
            },
            "apps[0].rate_limits: limiter names must be unique",
        ),
        ({"apps": [{"name": "a", "enabled": "yes"}]}, "apps[0].enabled: must be true or false"),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "x", "presence_events": 0}]}]},
            "apps[0].channels[0].presence_events: must be true or false",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "x", "join": "tokens"}]}]},
            "apps[0].channels[0].join: must be one of anyone, signed_in, nobody, granted, token",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "x", "user_limited": 1}]}]},
            "apps[0].channels[0].user_limited: must be true or false",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "x", "send": "granted"}]}]},
            "apps[0].channels[0]: 'granted' needs the app's session settings",
        ),
        (
            {"apps": [{"name": "a", "channels": [{"pattern": "x", "user_limited": True}]}]},
            "apps[0].channels[0].user_limited: needs the app's session settings",
        ),
        (
            {"apps": [{"name": "a", "session": {"secret": "s" * 32, "channels_claim": 5}}]},
            "apps[0].session.channels_claim: must be a string",
        ),
        ({"server": {"default_app": "zz"}}, "server.default_app: 'zz' is not one of the apps"),
        ({"apps": []}, "apps: must be a non-empty array"),
        ({"apps": [{"name": "a b"}]}, "apps[0].name: must be 1-64 characters"),
        ({"apps": [{"name": "a"}, {"name": "a"}]}, "apps: app names must be unique"),
        ({"wat": {}}, "wat: unknown key"),
    ],
)
def test_bad_settings_name_the_key_and_rule(raw: dict[str, object], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match="^" + re.escape(message)):
        cfg.from_dict(raw)


def test_unreadable_and_invalid_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits\n")
    with pytest.raises(cfg.ConfigError, match="not valid TOML"):
        cfg.load(bad)


def test_check_config_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "check-config", str(ROOT / "rtcore.example.toml")],
        capture_output=True,
        text=True,
        env={**os.environ, **EXAMPLE_ENV},
    )
    assert good.returncode == 0 and "ok (2 apps)" in good.stdout
    # The file's header names the variables it needs; without them, each is reported by name.
    header = (ROOT / "rtcore.example.toml").read_text().split("\n\n")[0]
    assert "five environment variables this file's `*_env` keys name" in header
    assert len(EXAMPLE_ENV) == 5
    bare = {k: v for k, v in os.environ.items() if k not in EXAMPLE_ENV}
    unset = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "check-config", str(ROOT / "rtcore.example.toml")],
        capture_output=True,
        text=True,
        env=bare,
    )
    assert unset.returncode == 2
    named = re.findall(r"environment variable (\w+) is not set", unset.stderr)
    assert sorted(named) == sorted(EXAMPLE_ENV), unset.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_channels = -3\n")
    out = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "limits.max_channels" in out.stderr


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("[broker]\npresence_ttl = 0", "broker.presence_ttl: must be a positive number"),
        ("[broker]\npresence_refresh = -1", "broker.presence_refresh: must be a positive number"),
        (
            "[broker]\npresence_ttl = 5\npresence_refresh = 5",
            "broker.presence_refresh: must be less than broker.presence_ttl (5.0 >= 5.0)",
        ),
        ("[limits]\nhistory_meta_ttl = 0", "limits.history_meta_ttl: must be a positive number"),
        (
            '[[apps]]\nname = "a"\n[[apps.channels]]\npattern = "f"\nhistory_size = 1\n'
            "history_ttl = 0",
            "apps[0].channels[0].history_ttl: must be a positive number",
        ),
    ],
)
def test_the_documented_lower_bounds_of_ttls(toml: str, error: str) -> None:
    """README: presence_ttl, presence_refresh (< presence_ttl), history_ttl and
    history_meta_ttl take any positive number, nothing else."""
    with pytest.raises(cfg.ConfigError) as refused:
        cfg.from_dict(tomllib.loads(toml))
    assert list(refused.value.errors) == [error]
    small = (
        "[broker]\npresence_ttl = 0.002\npresence_refresh = 0.001\n"
        "[limits]\nhistory_meta_ttl = 0.001\n"
        '[[apps]]\nname = "a"\n[[apps.channels]]\npattern = "f"\nhistory_size = 1\n'
        "history_ttl = 0.001\n"
    )
    conf = cfg.from_dict(tomllib.loads(small))
    assert (conf.broker.presence_ttl, conf.apps[0].channels[0].history_ttl) == (0.002, 0.001)


def test_an_apps_channel_rule_is_remembered_bounded_and_first_match() -> None:
    """``AppConfig.channel_rule`` memoises each channel's rule (a join asks several times):
    the answer is the first matching rule, equal configs stay equal, and the memo is cleared
    at ``RULE_CACHE`` channels rather than growing with every channel name."""
    rules = (ChannelRule("team:*", presence_events=False), ChannelRule("*", history_size=5))
    app, twin = AppConfig("a", channels=rules), AppConfig("a", channels=rules)
    assert app.channel_rule("team:red") is rules[0] and app.channel_rule("lobby") is rules[1]
    assert app.channel_rule("team:red") is rules[0]  # from the memo
    assert AppConfig("b").channel_rule("x") is None
    assert app == twin and hash(app) == hash(twin)  # the memo is not part of the value
    for i in range(RULE_CACHE + 10):
        assert app.channel_rule(f"team:{i}") is rules[0]
    assert 0 < len(app._rule_of) <= RULE_CACHE
