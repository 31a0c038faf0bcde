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

from rtcore.config.model import (
    CHANNEL_RULE_KEYS,
    DEFAULT_MEMBER_EVENTS_MAX,
    MAX_MEMBER_EVENTS_MAX,
    ChannelRule,
    ConfigError,
)
from rtcore.core import restrictions
from rtcore.core.limits.limiter import LIMITER_KEYS, OPERATIONS, SCOPES, Rule
from rtcore.core.permissions import HOOK, HOOK_OPERATIONS, RULE_VALUES

POLICIES = RULE_VALUES
"""What a channel rule's join, send, presence and history may be (protocol.md §4.1)."""

MAX_HISTORY_SIZE = 1_000_000
"""Largest ``history_size`` of a channel rule."""
T = TypeVar("T")
MAX_NUMBER = 2**53 - 1
"""The largest number any setting may be (integers and floats alike): every count, size and
duration of rtcore fits far below it, and every integer up to it is exact as a float, so no
setting can overflow a conversion (a 400-digit ``burst`` did, docs/configuration.md)."""
MAX_LIMITER_VALUE = 1_000_000_000
"""The largest ``rate`` and ``burst`` of a rate limiter."""
MAX_PER_SECONDS = 86_400.0 * 365
"""The longest ``per_seconds`` of a rate limiter: a year."""
MIN_REFILL_PER_SECOND = 1 / 86_400
"""The slowest a limiter may refill: one token a day (``rate / per_seconds``), so that a
refusal's ``retry_after`` is at most a day in milliseconds, always encodable."""
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def channel_rule(raw: object, where: str) -> ChannelRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    known_keys(raw, f"{where}.", set(CHANNEL_RULE_KEYS))
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f'{where}.pattern: must be a glob such as "public-*"')
    for k in ("join", "send", "presence", "history"):
        allowed = (*POLICIES, HOOK) if k in HOOK_OPERATIONS else POLICIES
        if raw.get(k, "anyone") not in allowed:
            raise ConfigError(f"{where}.{k}: must be one of {', '.join(allowed)}")
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
        boolean(raw.get("user_limited", False), f"{where}.user_limited"),
        _member_events_max(raw.get("member_events_max", DEFAULT_MEMBER_EVENTS_MAX), where),
    )


def _member_events_max(value: object, where: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_MEMBER_EVENTS_MAX:
        raise ConfigError(
            f"{where}.member_events_max: must be an integer from 1 to {MAX_MEMBER_EVENTS_MAX} "
            "(members past which clients without presence diffs get no member_* events)"
        )
    return value


def needs_session(rules: tuple[ChannelRule, ...], where: str, hooked: bool = False) -> list[str]:
    """A rule that checks grants or channel tokens, or is user-limited, in an app without
    session settings could never admit anyone: say so. With a connect hook (``hooked``),
    which gives users and grants, only channel tokens need them."""
    errors = []
    for i, rule in enumerate(rules):
        values = [v for v in (rule.join, rule.send, rule.presence, rule.history) if v]
        for value in ("token",) if hooked else ("granted", "token"):
            if value in values:
                errors.append(
                    f"{where}[{i}]: {value!r} needs the app's session settings "
                    "([apps.session]) to check tokens"
                )
        if rule.user_limited and not hooked:
            errors.append(f"{where}[{i}].user_limited: needs the app's session settings")
    return errors


def rate_rule(raw: object, where: str) -> Rule:
    """One ``[[apps.rate_limits]]`` table; every broken key of it reported in one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    errors: list[str] = []

    def check(fn: Callable[[], T], fallback: T) -> T:
        try:
            return fn()
        except ConfigError as exc:
            errors.extend(exc.errors)
            return fallback

    check(lambda: known_keys(raw, f"{where}.", set(LIMITER_KEYS)), None)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        errors.append(f"{where}.name: must be a non-empty string")
    rate = check(lambda: positive_number(raw.get("rate"), f"{where}.rate", MAX_LIMITER_VALUE), 1.0)
    per = check(
        lambda: positive_number(raw.get("per_seconds", 1), f"{where}.per_seconds", MAX_PER_SECONDS),
        1.0,
    )
    check(lambda: _refill(rate, per, where), None)
    burst = check(lambda: _burst(raw.get("burst"), rate, where), None)
    message = raw.get("error_message", "rate limit exceeded")
    if not isinstance(message, str):
        errors.append(f"{where}.error_message: must be a string")
    scope = raw.get("scope", "client")
    if scope not in SCOPES:
        errors.append(f"{where}.scope: must be {' or '.join(SCOPES)}")
    ops = check(lambda: _operations(raw.get("operations"), where), frozenset(OPERATIONS))
    if errors:
        raise ConfigError(*errors)
    return Rule(str(name), float(rate), float(per), burst, str(message), scope, ops)


def _refill(rate: float, per: float, where: str) -> None:
    """A limiter refills at least :data:`MIN_REFILL_PER_SECOND` (one token a day)."""
    if rate / per < MIN_REFILL_PER_SECOND:
        raise ConfigError(
            f"{where}.rate: {rate:g} per {per:g} s is slower than the slowest limiter "
            "(one token a day); refuse the operation with a channel rule instead"
        )


def _burst(burst: object, rate: float, where: str) -> float | None:
    if burst is None:
        if rate < 1:
            raise ConfigError(f"{where}.burst: needed when rate < 1 (the bucket must hold a token)")
        return None
    value = positive_number(burst, f"{where}.burst", MAX_LIMITER_VALUE)
    if value < 1:
        raise ConfigError(f"{where}.burst: must be at least 1")
    return value


def _operations(value: object, where: str) -> frozenset[str]:
    ops = strings(sorted(OPERATIONS) if value is None else value, f"{where}.operations")
    unknown = [op for op in ops if op not in OPERATIONS]
    if not ops or unknown:
        given = f" ({', '.join(map(repr, unknown))} is not one)" if unknown else " (empty)"
        raise ConfigError(
            f"{where}.operations: must be some of {', '.join(sorted(OPERATIONS))}{given}"
        )
    return frozenset(ops)


def presence_rate(value: Any, where: str) -> float:
    """An app's ``presence_rate``: 0 (no presence limit), or per second within the limiters'
    range (at least one a day, at most :data:`MAX_LIMITER_VALUE`)."""
    if value == 0 and type(value) in (int, float):
        return 0.0
    rate = positive_number(value, where, MAX_LIMITER_VALUE)
    if rate < MIN_REFILL_PER_SECOND:
        raise ConfigError(f"{where}: must be 0 (no limit) or at least one a day (1/86400)")
    return rate


def limiter_burst(value: Any, where: str) -> int:
    """A bucket's capacity: an integer from 1 to :data:`MAX_LIMITER_VALUE`."""
    return positive_int(value, where, MAX_LIMITER_VALUE)


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


def positive_int(value: Any, where: str, most: int = MAX_NUMBER) -> int:
    """A positive integer up to ``most``."""
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{where}: must be a positive integer")
    if value > most:
        raise ConfigError(f"{where}: must be at most {most}")
    return value


def positive_number(value: Any, where: str, most: float = MAX_NUMBER) -> float:
    """A positive number up to ``most`` (compared before any conversion: a huge integer does
    not overflow, NaN and infinities are refused)."""
    if (
        type(value) not in (int, float)
        or not value > 0
        or (type(value) is float and not math.isfinite(value))
    ):
        raise ConfigError(f"{where}: must be a positive number")
    if not value <= most:
        raise ConfigError(f"{where}: must be at most {most:.16g}")
    return float(value)


def seconds(value: Any, where: str) -> float:
    """A duration of zero or more seconds, up to :data:`MAX_NUMBER`."""
    if type(value) not in (int, float) or not 0 <= value <= MAX_NUMBER:
        raise ConfigError(f"{where}: must be a number of seconds from 0 to {MAX_NUMBER}")
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
