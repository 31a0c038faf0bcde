"""Editing an app's settings in the TOML file: comments survive, secrets stay out of views,
and every change is validated by check-config's own rules."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from rtcore.config import ConfigError
from rtcore.config import editor as sf
from tests.unit.test_config import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "rtcore.example.toml").read_text()


def edit(change: dict[str, object], text: str = EXAMPLE) -> sf.Edited:
    return sf.edit(text, "chat", change, env=EXAMPLE_ENV, base=ROOT)


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_the_view_shows_where_secrets_come_from_never_the_secrets() -> None:
    view = sf.view(EXAMPLE, "chat")
    assert [k["source"] for k in view["api_keys"]] == [
        "key_env CHAT_KEY_2026",
        "key_env CHAT_KEY_2027",
    ]
    assert view["api_keys"][0]["expires"] == "2027-01-31T00:00:00+00:00"
    assert "k-2026" not in str(view)
    assert view["allow_client_broadcast"] is False and view["enabled"] is True


def test_an_unchanged_save_leaves_the_file_byte_for_byte() -> None:
    view = sf.view(EXAMPLE, "chat")
    keys = [
        {"keep": i, "name": k["name"], "expires": k["expires"]}
        for i, k in enumerate(view["api_keys"])
    ]
    change = {**{n: view[n] for n, _ in sf.FLAGS}, "api_keys": keys}
    change |= {"channels": view["channels"], "rate_limits": view["rate_limits"]}
    assert edit(change).text == EXAMPLE


def test_a_switch_changes_one_line_and_keeps_its_comment() -> None:
    edited = edit({"session_required": True})
    assert changed_lines(EXAMPLE, edited.text) == [
        "-session_required = false        # true: only signed-in users may connect (4013)",
        "+session_required = true        # true: only signed-in users may connect (4013)",
    ]
    assert edited.config.apps[0].session_required


def test_reordered_limiters_keep_their_comments_and_the_order_is_applied() -> None:
    view = sf.view(EXAMPLE, "chat")
    edited = edit({"rate_limits": view["rate_limits"][::-1]})
    assert [r.name for r in edited.config.apps[0].rate_limits] == ["joins", "per-second"]
    assert "burst = 40                      # ...bucket size (default: rate)" in edited.text
    assert edited.text.count("# Rate limiters, applied in order") == 1
    assert sorted(edited.text.splitlines()) == sorted(EXAMPLE.splitlines())  # moved, not lost


def test_keys_are_kept_by_position_generated_new_and_revoked_by_omission() -> None:
    edited = edit(
        {
            "api_keys": [
                {"keep": 1, "name": "web-2027", "expires": "2031-01-01T00:00:00Z"},
                {"generate": True, "name": "mobile"},
            ]
        }
    )
    keys = edited.config.apps[0].api_keys
    assert [(k.name, k.key) for k in keys] == [
        ("web-2027", "k-2027"),
        ("mobile", edited.generated_keys[0][1]),
    ]
    assert keys[0].expires is not None
    assert "CHAT_KEY_2026" not in edited.text  # revoked
    assert edited.generated_keys[0][0] == "mobile" and len(edited.generated_keys[0][1]) >= 32


def test_a_new_key_from_the_environment_or_a_file_keeps_its_secret_out_of_the_text(
    tmp_path: Path,
) -> None:
    (tmp_path / "web.key").write_text("k-from-a-file\n")
    change = {"api_keys": [{"key_env": "CHAT_KEY_2027", "name": "env"}, {"key_file": "web.key"}]}
    edited = sf.edit(EXAMPLE, "chat", change, env=EXAMPLE_ENV, base=tmp_path)
    assert [k.key for k in edited.config.apps[0].api_keys] == ["k-2027", "k-from-a-file"]
    assert edited.generated_keys == ()
    assert 'key_env = "CHAT_KEY_2027"' in edited.text and 'key_file = "web.key"' in edited.text
    assert "k-2027" not in edited.text and "k-from-a-file" not in edited.text


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        (
            {"rate_limits": [{"name": "a", "rate": 0}, {"name": "b", "rate": 1, "scope": "x"}]},
            [
                "apps[0].rate_limits[0].rate: must be a positive number",
                "apps[0].rate_limits[1].scope: must be client or connection",
            ],
        ),
        ({"channels": [{"pattern": "", "join": "all"}]}, None),
        ({"enabled": "yes"}, ["enabled: must be true or false"]),
        ({"colour": "blue"}, ["colour: not a setting the settings page edits"]),
        ({"api_keys": [{"keep": 7}]}, None),
        ({"api_keys": [{"keep": 0}, {"keep": 0}]}, None),
        ({"api_keys": [{"generate": True, "expires": "soon"}]}, None),
        ({"api_keys": [], "api_key_required": True}, None),
        ({"api_keys": [{"key_env": "UNSET_VARIABLE"}]}, None),
        (
            {"api_keys": [{"key_env": "A", "key_file": "b"}]},
            ["api_keys[0]: give key_env or key_file, not both"],
        ),
        ({"api_keys": [{"key_file": " "}]}, ["api_keys[0].key_file: must be a non-empty string"]),
    ],
)
def test_a_bad_change_is_refused_with_every_reason(
    change: dict[str, object], errors: list[str] | None
) -> None:
    with pytest.raises(ConfigError) as refused:
        edit(change)
    assert refused.value.errors
    if errors is not None:
        assert list(refused.value.errors) == errors


def test_an_unknown_app_is_refused() -> None:
    with pytest.raises(ConfigError, match="no app 'nope'"):
        sf.edit(EXAMPLE, "nope", {}, env=EXAMPLE_ENV, base=ROOT)


def test_key_restrictions_are_shown_edited_and_checked_as_check_config_does() -> None:
    view = sf.view(EXAMPLE, "chat")
    first = view["api_keys"][0]
    assert first["allowed_origins"] == ["https://chat.example.com", "*.example.com"]
    assert (first["allowed_ips"], first["realtime"]) == ([], True)
    edited = edit(
        {
            "api_keys": [
                {"keep": 0, "name": "web-2026", "allowed_origins": ["https://a.example.com"]},
                {"keep": 1, "name": "web-2027", "allowed_ips": ["10.0.0.0/8"], "realtime": False},
            ]
        }
    )
    web26, web27 = edited.config.apps[0].api_keys
    assert [p.text for p in web26.allowed_origins] == ["https://a.example.com"]
    assert [p.text for p in web27.allowed_origins] == ["https://chat.example.com", "*.example.com"]
    assert [str(n) for n in web27.allowed_ips] == ["10.0.0.0/8"] and not web27.realtime
    assert 'allowed_ips = ["10.0.0.0/8"]' in edited.text and "realtime = false" in edited.text
    # Back to the defaults: the keys leave the file.
    cleared = edit({"api_keys": [{"keep": 0, "allowed_origins": []}]}, edited.text)
    assert "allowed_origins" not in cleared.text.split("[[apps.api_keys]]")[1]
    with pytest.raises(ConfigError) as caught:
        edit({"api_keys": [{"keep": 0, "allowed_origins": ["example.com"], "allowed_ips": ["x"]}]})
    assert caught.value.errors == (
        "apps[0].api_keys[0].allowed_origins[0]: 'example.com' is not an origin "
        "(https://app.example.com, http://localhost:3000) or a wildcard (*.example.com, "
        "https://*.example.com)",
        "apps[0].api_keys[0].allowed_ips[0]: 'x' is not an IP address or a network "
        "(192.0.2.0/24, 2001:db8::/32)",
    )
    for bad in ({"realtime": "no"}, {"allowed_ips": "10.0.0.0/8"}):
        with pytest.raises(ConfigError, match="api_keys\\[0\\]"):
            edit({"api_keys": [{"keep": 0, **bad}]})
