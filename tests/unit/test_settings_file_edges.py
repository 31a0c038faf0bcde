"""The settings page's editor at its edges (issue 20): switches set back to their default,
expiries cleared and zone-less, nulls from the page, names that are not strings, what a
change may hold at all, and the views parsed once for every app."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from rtcore.config import AppConfig, ChannelRule
from rtcore.config import editor as sf
from rtcore.core.auth import ApiKey
from rtcore.core.limits.limiter import Rule
from tests.unit.test_settings_file import EXAMPLE, ROOT, edit

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


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        ({"api_keys": {"keep": 0}}, ["api_keys: must be a list of objects"]),
        ({"api_keys": ["web"]}, ["api_keys: must be a list of objects"]),
        ({"api_keys": [{"keep": 0, "name": 5}]}, ["api_keys[0].name: must be a string"]),
        (
            {"api_keys": [{"keep": 1}]},
            ["api_keys[0].keep: not one of the app's keys (or kept twice)"],
        ),
        (
            {"api_keys": [{"keep": True}]},
            ["api_keys[0].keep: not one of the app's keys (or kept twice)"],
        ),
        (
            {"api_keys": [{"name": "x"}]},
            ["api_keys[0]: give keep (an existing key), generate: true, key_env or key_file"],
        ),
        (
            {"api_keys": [{"keep": 0, "expires": "soon"}]},
            ["api_keys[0].expires: must be a date-time such as 2027-01-31T00:00:00Z"],
        ),
        ({"channels": {"pattern": "x"}}, ["channels: must be a list of objects"]),
        ({"rate_limits": [1]}, ["rate_limits: must be a list of objects"]),
        (
            {"channels": [{"pattern": "x", "colour": 1, "bold": 2}]},
            ["channels[0].bold: unknown key", "channels[0].colour: unknown key"],
        ),
    ],
)
def test_a_malformed_change_is_refused_with_its_place(change: Any, errors: list[str]) -> None:
    with pytest.raises(sf.SettingsError) as refused:
        small(change)
    assert list(refused.value.errors) == errors


def test_a_renamed_key_keeps_its_table_and_a_generated_key_is_32_characters() -> None:
    text = SMALL.replace('name = "web"', 'name = "web"   # the site')
    edited = edit({"api_keys": [{"keep": 0, "name": "site"}, {"generate": True}]}, text)
    assert 'name = "site"   # the site' in edited.text  # the kept key's line, renamed in place
    (generated,) = edited.generated_keys
    assert generated[0] == "" and len(generated[1]) == 32
    assert edited.config.apps[0].api_keys[1].key == generated[1]
    assert edited.text.count("[[apps.api_keys]]") == 2


def test_a_key_view_says_where_its_secret_is_and_defaults_its_name() -> None:
    text = SMALL.replace('name = "web"\n', "")
    (view,) = sf.view(text, "chat")["api_keys"]
    assert view == {
        "name": "",
        "expires": "2030-01-01T00:00:00+00:00",
        "source": "in the file",
        "allowed_origins": [],
        "allowed_ips": [],
        "realtime": True,
    }
    text = SMALL.replace('key = "k-web-0123456789"', 'key_file = "secret.txt"')
    assert sf.view(text, "chat")["api_keys"][0]["source"] == "key_file secret.txt"


def test_what_follows_an_array_stays_after_it_when_the_array_changes() -> None:
    text = (
        '[[apps]]\nname = "chat"\n\n[[apps.rate_limits]]\nname = "a"\nrate = 1\n\n'
        '# the second app\n[[apps]]\nname = "other"\n'
    )
    edited = edit({"rate_limits": [{"name": "a", "rate": 1}, {"name": "b", "rate": 2}]}, text)
    assert edited.text == (
        '[[apps]]\nname = "chat"\n\n[[apps.rate_limits]]\nname = "a"\nrate = 1\n\n'
        '[[apps.rate_limits]]\nname = "b"\nrate = 2\n\n'
        '# the second app\n[[apps]]\nname = "other"\n'
    )
    removed = edit({"rate_limits": []}, text)
    assert "rate_limits" not in removed.text
    assert '\n# the second app\n[[apps]]\nname = "other"\n' in removed.text


def test_a_file_that_is_not_toml_is_refused_with_the_reason() -> None:
    with pytest.raises(sf.SettingsError, match="the config file is not valid TOML"):
        sf.edit("[[apps]\n", "chat", {}, env={}, base=ROOT)


OPEN = {"allowed_origins": [], "allowed_ips": [], "realtime": True}
"""A key's restrictions as the view shows them when the file sets none."""


def test_the_view_of_keys_without_a_file() -> None:
    keys = (ApiKey("k" * 32, expires=1_900_000_000.0, name="web"), ApiKey("j" * 32))
    view = sf.view_config(AppConfig("demo", api_keys=keys))
    assert view["api_keys"] == [
        {"name": "web", "expires": "2030-03-17T17:46:40+00:00", "source": "configured", **OPEN},
        {"name": "", "expires": None, "source": "configured", **OPEN},
    ]


def test_views_of_hand_made_shapes() -> None:
    text = (
        'apps = [1, {name = "a", channels = [1]}, {name = "b", api_keys = "oops"},'
        ' {name = "c"}, {name = "c", enabled = false}]\n'
    )
    views = sf.views(text)
    assert sorted(views) == ["c"]  # a and b cannot be shown from the file: skipped
    assert views["c"]["enabled"] is True  # the first of two apps of one name
    assert sf.views("apps = 5\n") == {} and sf.views("") == {}


def test_a_key_without_a_secret_line_is_shown_as_in_the_file() -> None:
    text = SMALL.replace('key = "k-web-0123456789"\n', "")
    assert sf.view(text, "chat")["api_keys"][0]["source"] == "in the file"


def test_an_app_without_keys_gets_a_generated_one() -> None:
    edited = sf.edit(
        SMALL, "other", {"api_keys": [{"generate": True, "name": "n"}]}, env={}, base=ROOT
    )
    assert [k.name for k in edited.config.apps[1].api_keys] == ["n"]


def test_reordered_channel_rules_keep_their_comments() -> None:
    text = SMALL.replace(
        '[[apps]]\nname = "other"\n',
        '[[apps.channels]]\npattern = "a-*"   # the a rooms\n\n'
        '[[apps.channels]]\npattern = "b-*"   # the b rooms\n\n[[apps]]\nname = "other"\n',
    )
    edited = edit({"channels": [{"pattern": "b-*"}, {"pattern": "a-*"}]}, text)
    assert edited.text.index('"b-*"   # the b rooms') < edited.text.index('"a-*"   # the a rooms')


def test_a_key_file_is_read_relative_to_the_config_files_directory(tmp_path: Path) -> None:
    (tmp_path / "web.key").write_text("k-from-a-file-0123456789")
    text = SMALL.replace('key = "k-web-0123456789"', 'key_file = "web.key"')
    edited = sf.edit(text, "chat", {"enabled": True}, env={}, base=tmp_path)
    assert edited.config.apps[0].api_keys[0].key == "k-from-a-file-0123456789"


def test_places_are_named_from_the_top_and_at_most_20_are_listed() -> None:
    with pytest.raises(sf.SettingsError) as refused:
        sf.check_change({"rate_limits": [{"rate": 2**64}]})
    assert refused.value.errors == ("rate_limits[0].rate: an integer beyond 64 bits",)
    with pytest.raises(sf.SettingsError) as refused:
        sf.check_change({"rate_limits": [None] * 25})
    assert len(refused.value.errors) == 20
    with pytest.raises(sf.SettingsError) as refused:
        sf.check_change("x")
    assert refused.value.errors == ("the settings change must be a JSON object",)
