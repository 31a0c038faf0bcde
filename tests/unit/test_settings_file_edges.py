"""The settings page's editor at its edges (issue 20): switches set back to their default,
expiries cleared and zone-less, nulls from the page, names that are not strings, what a
change may hold at all, and the views parsed once for every app."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rtcore.config import AppConfig, ChannelRule
from rtcore.config import editor as sf
from rtcore.core.limits.limiter import Rule
from tests.unit.test_settings_file import EXAMPLE, edit

SMALL = """[[apps]]
name = "chat"
allow_client_broadcast = false

[[apps.api_keys]]
name = "web"
key = "k-web-0123456789"
expires = 2030-01-01T00:00:00Z

[[apps]]
name = "other"
"""


def small(change: dict[str, Any]) -> sf.Edited:
    return edit(change, SMALL)


def test_a_switch_set_back_to_its_default_is_written() -> None:
    edited = small({"allow_client_broadcast": True})
    assert "allow_client_broadcast = true" in edited.text
    assert edited.config.apps[0].allow_client_broadcast


def test_a_switch_at_its_default_and_absent_stays_absent() -> None:
    edited = small({"allow_client_send": True, "enabled": True})
    assert "allow_client_send" not in edited.text and "enabled" not in edited.text
    edited = small({"allow_client_send": False})
    assert "allow_client_send = false" in edited.text


def test_a_cleared_expiry_is_removed_from_the_key() -> None:
    edited = small({"api_keys": [{"keep": 0, "name": "web", "expires": None}]})
    assert "expires" not in edited.text and edited.config.apps[0].api_keys[0].expires is None
    assert "k-web-0123456789" in edited.text  # the secret stays where it was


def test_a_zone_less_expiry_is_taken_as_utc() -> None:
    edited = small({"api_keys": [{"keep": 0, "name": "web", "expires": "2031-02-03T04:05:06"}]})
    expected = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC).timestamp()
    assert edited.config.apps[0].api_keys[0].expires == expected
    assert "expires = 2031-02-03T04:05:06Z" in edited.text


def test_nulls_from_the_page_are_keys_left_out() -> None:
    rule = {"pattern": "public-*", "join": "anyone", "presence": None, "history_size": None}
    edited = small({"channels": [rule]})
    assert "presence" not in edited.text and "history_size" not in edited.text
    assert edited.config.apps[0].channels == (ChannelRule("public-*", join="anyone"),)


def test_a_limiter_whose_name_is_not_a_string_matches_no_table_and_is_refused() -> None:
    limiters = [{"name": ["per-second"], "rate": 1}]
    with pytest.raises(sf.cfg.ConfigError) as refused:
        edit({"rate_limits": limiters})
    assert refused.value.errors == ("apps[0].rate_limits[0].name: must be a non-empty string",)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ([], "the settings change must be a JSON object"),
        ({"channels": [{"pattern": "\ud800"}]}, "channels[0].pattern: not a string of Unicode"),
        ({"channels": [None]}, "channels[0]: must not be null"),
        ({"channels": [{"pattern": [[["x"]]]}]}, "channels[0].pattern[0]: nested too deeply"),
        ({"rate_limits": [{"rate": 2**63}]}, "rate_limits[0].rate: an integer beyond 64 bits"),
        ({"rate_limits": [{"rate": -(2**63) - 1}]}, "an integer beyond 64 bits"),
        ({"rate_limits": [{"rate": float("nan")}]}, "rate_limits[0].rate: must be a finite"),
        ({"rate_limits": [{"rate": b"1"}]}, "rate_limits[0].rate: not a value a config file"),
        ({"\udc80": True}, "the change: a key is not a string of Unicode characters"),
    ],
)
def test_what_a_change_may_hold(change: Any, error: str) -> None:
    with pytest.raises(sf.SettingsError) as refused:
        sf.check_change(change)
    assert any(error in e for e in refused.value.errors), refused.value.errors


def test_the_largest_values_a_change_may_hold() -> None:
    sf.check_change({"rate_limits": [{"rate": 2**63 - 1, "operations": ["join"]}]})
    sf.check_change({"rate_limits": [{"rate": -(2**63), "burst": 1.5, "scope": None}]})


def test_every_apps_view_from_one_parse() -> None:
    views = sf.views(EXAMPLE)
    assert sorted(views) == ["chat", "dashboard"]
    assert views["chat"] == sf.view(EXAMPLE, "chat")
    assert views["dashboard"]["session_required"] is True
    assert sf.views(SMALL)["other"]["allow_client_broadcast"] is True  # absent: the default
    assert views["dashboard"]["api_keys"] == [] and views["dashboard"]["channels"] == []
    with pytest.raises(sf.SettingsError, match="not valid TOML"):
        sf.views("[[apps]\n")
    with pytest.raises(sf.SettingsError, match="no app 'nope'"):
        sf.view(EXAMPLE, "nope")


def test_the_view_of_settings_without_a_file() -> None:
    settings = AppConfig(
        "demo",
        channels=(ChannelRule("room-*", send="signed_in"),),
        rate_limits=(Rule("r", 5, 1.0, operations=frozenset({"send", "join"})),),
    )
    view = sf.view_config(settings)
    assert {k: view[k] for k, _ in sf.FLAGS} == {
        "enabled": True,
        "api_key_required": settings.api_key_required,
        "session_required": False,
        "allow_client_join": True,
        "allow_client_send": True,
        "allow_client_broadcast": True,
    }
    assert view["api_keys"] == []
    assert view["channels"][0]["pattern"] == "room-*" and view["channels"][0]["send"] == "signed_in"
    assert view["rate_limits"] == [
        {
            "name": "r",
            "rate": 5,
            "per_seconds": 1.0,
            "burst": None,
            "error_message": "rate limit exceeded",
            "scope": "client",
            "operations": ["join", "send"],
        }
    ]
