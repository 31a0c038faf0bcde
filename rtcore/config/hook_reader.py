"""``[apps.hooks]`` and ``[[apps.webhooks]]`` checked key by key (pure): each returns the
settings or raises :class:`ConfigError` naming every broken key."""

from __future__ import annotations

import urllib.parse
from typing import Any, Protocol

from rtcore.config.checks import boolean, known_keys, positive_int, positive_number, strings
from rtcore.config.hook_settings import (
    HOOK_KINDS,
    WEBHOOK_EVENTS,
    HooksConfig,
    WebhookConfig,
)
from rtcore.config.model import ChannelRule, ConfigError

MIN_SECRET = 32
"""Characters a signing secret must have at least."""
HOOKS_KEYS = frozenset(
    {
        *(f"{kind}_url" for kind in HOOK_KINDS),
        "secret",
        "secret_env",
        "secret_file",
        "timeout",
        "max_concurrency",
        "breaker_failures",
        "breaker_open",
        "join_cache_ttl",
        "headers",
    }
)
WEBHOOK_KEYS = frozenset(
    {
        "url",
        "secret",
        "secret_env",
        "secret_file",
        "events",
        "channels",
        "queue_size",
        "batch_window",
        "max_attempts",
        "retry_base",
        "retry_max",
        "timeout",
        "enabled",
    }
)


class Secrets(Protocol):
    """Where a secret comes from (rtcore.config.reader.Reader): the key, ``_env`` or ``_file``."""

    def secret(self, raw: dict[str, Any], where: str, name: str) -> str | None: ...


def url(value: object, where: str) -> str:
    """An absolute http:// or https:// URL with a host."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be an http:// or https:// URL")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {value!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{where}: {value!r} has an invalid port") from None
    return value


def signing_secret(secrets: Secrets, raw: dict[str, Any], where: str) -> str:
    secret = secrets.secret(raw, where, "secret")
    if secret is None:
        raise ConfigError(f"{where}: needs secret_env (or secret, secret_file) to sign requests")
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"{where}.secret: must be at least {MIN_SECRET} characters")
    return secret


def _collect(errors: list[str], check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ConfigError as exc:
        errors.extend(exc.errors)
        return None


def hooks(secrets: Secrets, raw: object, where: str) -> HooksConfig:
    """``[apps.hooks]``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    errors: list[str] = []
    _collect(errors, known_keys, raw, f"{where}.", HOOKS_KEYS)
    urls = {
        f"{kind}_url": _collect(errors, url, raw[f"{kind}_url"], f"{where}.{kind}_url")
        for kind in HOOK_KINDS
        if f"{kind}_url" in raw
    }
    if not urls and not errors:
        errors.append(f"{where}: set at least one of connect_url, join_url, publish_url")
    secret = _collect(errors, signing_secret, secrets, raw, where)
    numbers: dict[str, Any] = {}
    for key, check in (
        ("timeout", positive_number),
        ("max_concurrency", positive_int),
        ("breaker_failures", positive_int),
        ("breaker_open", positive_number),
    ):
        if key in raw:
            numbers[key] = _collect(errors, check, raw[key], f"{where}.{key}")
    ttl = raw.get("join_cache_ttl", 0)
    if type(ttl) not in (int, float) or not 0 <= ttl <= 86_400:
        errors.append(f"{where}.join_cache_ttl: must be seconds from 0 (off) to 86400")
    headers = _collect(errors, strings, raw.get("headers", []), f"{where}.headers")
    if errors:
        raise ConfigError(*errors)
    return HooksConfig(
        secret=secret,
        join_cache_ttl=float(ttl),
        headers=tuple(h.lower() for h in headers),
        **urls,
        **numbers,
    )


def webhook(secrets: Secrets, raw: object, where: str) -> WebhookConfig | None:
    """One ``[[apps.webhooks]]`` table (None: ``enabled = false``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    errors: list[str] = []
    _collect(errors, known_keys, raw, f"{where}.", WEBHOOK_KEYS)
    target = _collect(errors, url, raw.get("url"), f"{where}.url")
    secret = _collect(errors, signing_secret, secrets, raw, where)
    events = _collect(errors, strings, raw.get("events", list(WEBHOOK_EVENTS)), f"{where}.events")
    if events is not None and (not events or not set(events) <= set(WEBHOOK_EVENTS)):
        errors.append(f"{where}.events: must be some of {', '.join(WEBHOOK_EVENTS)}")
    channels = _collect(errors, strings, raw.get("channels", []), f"{where}.channels")
    if events and "client_message" in events and not channels and channels is not None:
        errors.append(f'{where}.channels: client_message needs channel globs, e.g. ["chat-*"]')
    numbers: dict[str, Any] = {}
    for key, check in (
        ("queue_size", positive_int),
        ("max_attempts", positive_int),
        ("batch_window", positive_number),
        ("retry_base", positive_number),
        ("retry_max", positive_number),
        ("timeout", positive_number),
    ):
        if key in raw:
            numbers[key] = _collect(errors, check, raw[key], f"{where}.{key}")
    enabled = _collect(errors, boolean, raw.get("enabled", True), f"{where}.enabled")
    if errors:
        raise ConfigError(*errors)
    if not enabled:
        return None
    return WebhookConfig(
        url=target,
        secret=secret,
        events=tuple(events),
        channels=tuple(channels),
        **numbers,
    )


def hooked_rules(
    channels: tuple[ChannelRule, ...], hooks: HooksConfig | None, given: bool, where: str
) -> list[str]:
    """A rule's ``join = "hook"`` needs ``join_url``; ``send = "hook"`` needs ``publish_url``
    (no errors here when ``[apps.hooks]`` was given but broken: those are reported)."""
    errors = []
    if given and hooks is None:
        return []
    for i, rule in enumerate(channels):
        for field, kind in (("join", "join"), ("send", "publish")):
            if getattr(rule, field) == "hook" and (hooks is None or hooks.url(kind) is None):
                errors.append(
                    f'{where}.channels[{i}].{field}: "hook" needs {where}.hooks.{kind}_url'
                )
    return errors
