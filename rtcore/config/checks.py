"""The rules of single config values and of self-contained tables (pure): each check returns
the value it accepts or raises :class:`ConfigError` naming the key and the rule it breaks.
:class:`rtcore.config.reader.Reader` puts them together and collects the errors.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

from rtcore.config.model import CHANNEL_RULE_KEYS, ChannelRule, ConfigError
from rtcore.core import restrictions
from rtcore.core.limits.limiter import LIMITER_KEYS, OPERATIONS, SCOPES, Rule

POLICIES = ("anyone", "signed_in", "nobody")
MAX_HISTORY_SIZE = 1_000_000
"""Largest ``history_size`` of a channel rule."""
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


def channel_rule(raw: object, where: str) -> ChannelRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    known_keys(raw, f"{where}.", set(CHANNEL_RULE_KEYS))
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f'{where}.pattern: must be a glob such as "public-*"')
    for k in ("join", "send", "presence", "history"):
        if raw.get(k, "anyone") not in POLICIES:
            raise ConfigError(f"{where}.{k}: must be one of {', '.join(POLICIES)}")
    size = raw.get("history_size", 0)
    if type(size) is not int or not 0 <= size <= MAX_HISTORY_SIZE:
        raise ConfigError(
            f"{where}.history_size: must be an integer from 0 (no history) to {MAX_HISTORY_SIZE}"
        )
    ttl = raw.get("history_ttl", 300.0)
    if "history_ttl" in raw:
        positive_number(ttl, f"{where}.history_ttl")
        if size == 0:
            raise ConfigError(f"{where}.history_ttl: set, but history_size is 0 (no history)")
    return ChannelRule(
        pattern,
        raw.get("join", "anyone"),
        raw.get("send", "anyone"),
        raw.get("presence"),
        boolean(raw.get("presence_events", True), f"{where}.presence_events"),
        size,
        float(ttl),
        raw.get("history"),
    )


def rate_rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    known_keys(
        raw,
        f"{where}.",
        set(LIMITER_KEYS),
    )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: must be a non-empty string")
    rate = positive_number(raw.get("rate"), f"{where}.rate")
    per = positive_number(raw.get("per_seconds", 1), f"{where}.per_seconds")
    burst = raw.get("burst")
    if burst is not None:
        positive_number(burst, f"{where}.burst")
        if burst < 1:
            raise ConfigError(f"{where}.burst: must be at least 1")
    elif rate < 1:
        raise ConfigError(f"{where}.burst: needed when rate < 1 (the bucket must hold a token)")
    message = raw.get("error_message", "rate limit exceeded")
    if not isinstance(message, str):
        raise ConfigError(f"{where}.error_message: must be a string")
    scope = raw.get("scope", "client")
    if scope not in SCOPES:
        raise ConfigError(f"{where}.scope: must be {' or '.join(SCOPES)}")
    ops = strings(raw.get("operations", sorted(OPERATIONS)), f"{where}.operations")
    if not ops or not set(ops) <= OPERATIONS:
        raise ConfigError(f"{where}.operations: must be some of {', '.join(sorted(OPERATIONS))}")
    return Rule(
        name,
        float(rate),
        float(per),
        None if burst is None else float(burst),
        message,
        scope,
        frozenset(ops),
    )


def get_table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    return value


def get_array(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array")
    return value


def strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be an array of strings")
    return value


def known_keys(table: dict[str, Any], prefix: str, known: AbstractSet[str]) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        listed = ", ".join(sorted(known))
        raise ConfigError(*(f"{prefix}{key}: unknown key (known: {listed})" for key in unknown))


def network(value: str, where: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        raise ConfigError(
            f"{where.rsplit('[', 1)[0]}: {value!r} is not an address or network (CIDR)"
        ) from None


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def positive_int(value: Any, where: str) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{where}: must be a positive integer")
    return value


def positive_number(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{where}: must be a positive number")
    return float(value)


MAX_KEY_RESTRICTIONS = 256
"""Most entries of an API key's ``allowed_origins`` or ``allowed_ips``."""


def key_restrictions(
    raw: dict[str, Any], where: str
) -> tuple[tuple[restrictions.OriginPattern, ...], tuple[IPNetwork, ...]]:
    """An API key's ``allowed_origins`` (origins or ``*.domain`` wildcards) and
    ``allowed_ips`` (addresses or CIDR networks): every bad entry named."""
    errors: list[str] = []
    origins = _entries(raw, "allowed_origins", restrictions.origin_pattern, where, errors)
    ips = _entries(raw, "allowed_ips", restrictions.address_network, where, errors)
    if errors:
        raise ConfigError(*errors)
    return tuple(origins), tuple(ips)


def _entries(
    raw: dict[str, Any], key: str, parse: Callable[[str], T], where: str, errors: list[str]
) -> list[T]:
    entries = strings(raw.get(key, []), f"{where}.{key}")
    if len(entries) > MAX_KEY_RESTRICTIONS:
        errors.append(f"{where}.{key}: at most {MAX_KEY_RESTRICTIONS} entries")
    out: list[T] = []
    for i, entry in enumerate(entries):
        try:
            out.append(parse(entry))
        except restrictions.PatternError as exc:
            errors.append(f"{where}.{key}[{i}]: {exc}")
    return out
