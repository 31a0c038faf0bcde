"""Who may do what in a channel: the one permission decision (sans-IO, protocol.md §4.1).

Theory of operation: a channel rule gives each operation (``join``, ``send``, ``presence``,
``history``) a *value*. :func:`decide` takes that value, the operation, the channel and the
:class:`Subject` asking (its user, the grants of its session token, the channel token it
holds for that channel) and returns None (allowed) or a :class:`Refusal` with the error
code, a bounded reason (a metrics label) and a message. It reads nothing else: no clock (a
held channel token is unexpired: expired ones are removed before), no settings, no I/O. A
new rule value is one more entry of ``_DECIDERS``.

The value ``hook`` (docs/hooks.md) has a third outcome: for a join or a send it returns
:data:`ASK_HOOK` -- the app's backend decides (``join_url``, ``publish_url``), which the
session asks, deferred; for presence and history (which follow ``join = "hook"`` unless set)
it admits the channel's members: those the join hook let in (:attr:`Subject.member`).

Grants (a session token's ``channels`` claim) are compiled once per token
(:func:`parse_grants`): exact channel names in a dict, ``prefix*`` patterns in one dict per
prefix length, any other glob into one regular expression per operation; the operations a
channel gets are then cached per channel (bounded), so a join checked against hundreds of
patterns costs a few dict lookups.

User-limited channels (a rule's ``user_limited``): the part of the name after its last
``#`` lists the users who may use the channel (:func:`listed_users`, :func:`check_listed`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rtcore.protocol import ErrorCode

OPERATIONS = ("join", "send", "presence", "history")
"""What a channel rule and a grant decide."""
RULE_VALUES = ("anyone", "signed_in", "nobody", "granted", "token")
"""What a channel rule's ``join``, ``send``, ``presence`` and ``history`` may be; ``join``
and ``send`` may also be :data:`HOOK`."""
HOOK = "hook"
"""The rule value that leaves a join or a send to the app's hooks (docs/hooks.md)."""
HOOK_OPERATIONS = ("join", "send")
"""The operations a rule may set to :data:`HOOK` (presence and history follow the join)."""
DEFAULT_TOKEN_OPS = frozenset({"join", "presence", "history"})
"""What a channel token without ``ops`` allows."""
MAX_GRANT_PATTERNS = 1024
"""Most patterns a grants claim may hold."""
MAX_PATTERN_LENGTH = 128
"""Longest grant pattern (the longest channel name)."""
MAX_LISTED_USERS = 16
"""Most users a user-limited channel's name may list."""
GRANT_CACHE = 1024
"""Channels whose operations one token's grants remember (emptied when full)."""
_PATTERN = re.compile(r"[A-Za-z0-9_.:@/=+~#,*?-]{1,128}")


class GrantsError(ValueError):
    """A grants claim of the wrong shape; the message says what is wrong."""


class Grants:
    """A session token's channel grants, compiled once (see the module docstring)."""

    __slots__ = ("count", "_exact", "_prefixes", "_globs", "_cache")

    def __init__(self, patterns: Mapping[str, frozenset[str]]) -> None:
        self.count = len(patterns)
        self._exact: dict[str, frozenset[str]] = {}
        self._prefixes: dict[int, dict[str, frozenset[str]]] = {}
        globs: dict[str, list[str]] = {}
        for pattern, ops in patterns.items():
            if "*" not in pattern and "?" not in pattern:
                self._exact[pattern] = ops
            elif pattern.endswith("*") and not any(c in pattern[:-1] for c in "*?"):
                prefix = pattern[:-1]
                self._prefixes.setdefault(len(prefix), {})[prefix] = ops
            else:
                for op in ops:
                    globs.setdefault(op, []).append(fnmatch.translate(pattern))
        self._globs = {op: re.compile("|".join(rx)) for op, rx in globs.items()}
        self._cache: dict[str, frozenset[str]] = {}

    def ops(self, channel: str) -> frozenset[str]:
        """Every operation some pattern grants on ``channel`` (the union of the matches)."""
        cache = self._cache
        found = cache.get(channel)
        if found is not None:
            return found
        ops = self._exact.get(channel, frozenset())
        for length, prefixes in self._prefixes.items():
            more = prefixes.get(channel[:length])
            if more is not None:
                ops = ops | more
        for op, rx in self._globs.items():
            if op not in ops and rx.match(channel) is not None:
                ops = ops | {op}
        if len(cache) >= GRANT_CACHE:
            cache.clear()
        cache[channel] = ops
        return ops

    def allows(self, channel: str, op: str) -> bool:
        return op in self.ops(channel)


NO_GRANTS = Grants({})


def parse_grants(claim: object) -> Grants:
    """A grants claim (``{pattern: [operation, ...]}``) compiled, or :class:`GrantsError`."""
    if claim is None:
        return NO_GRANTS
    if not isinstance(claim, dict):
        raise GrantsError("must be a map of channel patterns to lists of operations")
    if len(claim) > MAX_GRANT_PATTERNS:
        raise GrantsError(f"has {len(claim)} patterns; at most {MAX_GRANT_PATTERNS} are allowed")
    patterns: dict[str, frozenset[str]] = {}
    for pattern, ops in claim.items():
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
            shown = pattern[:40] if isinstance(pattern, str) else type(pattern).__name__
            raise GrantsError(
                f"pattern {shown!r} must be 1-{MAX_PATTERN_LENGTH} characters of a channel "
                "name's alphabet, * and ?"
            )
        if not isinstance(ops, list) or any(op not in OPERATIONS for op in ops):
            raise GrantsError(
                f"pattern {pattern!r}: must list operations among {', '.join(OPERATIONS)}"
            )
        patterns[pattern] = frozenset(ops)
    return Grants(patterns)


@attrs.frozen
class ChannelToken:
    """A verified channel token (rtcore.core.channel_tokens): what it allows in its channel."""

    channel: str
    expires: float
    """Its ``exp`` (Unix time)."""
    ops: frozenset[str] = DEFAULT_TOKEN_OPS
    info: Any = None
    """The member info shown beside the profile in this channel (None: none)."""


@attrs.frozen
class Subject:
    """Who asks: the connection's user (None: anonymous), its grants, and the channel
    token it holds for the channel in question (None: none)."""

    user: str | None
    grants: Grants = NO_GRANTS
    token: ChannelToken | None = None
    member: bool = False
    """The connection is in the channel (or is being let in): what ``hook`` asks of
    presence and history."""


@attrs.frozen
class Refusal:
    """A refused operation: the ``err`` code, a bounded reason (the metrics label) and the
    message for the client."""

    code: ErrorCode
    reason: str
    message: str


@attrs.frozen
class AskHook:
    """The rule leaves the operation to the app's hook: the session asks it (deferred)."""


ASK_HOOK = AskHook()
Decision = Refusal | AskHook | None
"""What :func:`decide` returns: None (allowed), a refusal, or "ask the app's hook"."""

REFUSAL_REASONS = (
    "nobody",
    "signed_in",
    "not_granted",
    "no_token",
    "token_ops",
    "user_limited",
    "invalid_channel_token",
    "not_member",
)
"""Every :attr:`Refusal.reason` (bounded: they label ``rtcore_permission_refusals``)."""


def _anyone(op: str, channel: str, who: Subject) -> Refusal | None:
    return None


def _signed_in(op: str, channel: str, who: Subject) -> Refusal | None:
    if who.user is not None:
        return None
    message = f"{_doing(op, channel)} needs a signed-in user"
    return Refusal(ErrorCode.FORBIDDEN, "signed_in", message)


def _nobody(op: str, channel: str, who: Subject) -> Refusal | None:
    return Refusal(ErrorCode.FORBIDDEN, "nobody", f"{_doing(op, channel)} is not allowed")


def _granted(op: str, channel: str, who: Subject) -> Refusal | None:
    if who.grants.allows(channel, op):
        return None
    return Refusal(
        ErrorCode.FORBIDDEN,
        "not_granted",
        f"{_doing(op, channel)} needs a session token that grants {op!r} on it",
    )


def _token(op: str, channel: str, who: Subject) -> Refusal | None:
    token = who.token
    if token is None:
        return Refusal(
            ErrorCode.FORBIDDEN, "no_token", f"{_doing(op, channel)} needs a channel token"
        )
    if op not in token.ops:
        return Refusal(
            ErrorCode.FORBIDDEN,
            "token_ops",
            f"{_doing(op, channel)}: the channel token does not allow {op!r}",
        )
    return None


def _hook(op: str, channel: str, who: Subject) -> Decision:
    if op in HOOK_OPERATIONS:
        return ASK_HOOK
    if who.member:  # presence, history: the members the join hook let in
        return None
    return Refusal(
        ErrorCode.FORBIDDEN, "not_member", f"{_doing(op, channel)} is for the channel's members"
    )


_DECIDERS: dict[str, Callable[[str, str, Subject], Decision]] = {
    "anyone": _anyone,
    "signed_in": _signed_in,
    "nobody": _nobody,
    "granted": _granted,
    "token": _token,
    HOOK: _hook,
}


def decide(value: str, op: str, channel: str, who: Subject) -> Decision:
    """Whether the rule value ``value`` for operation ``op`` lets ``who`` do it in
    ``channel``: None (allowed), the refusal, or :data:`ASK_HOOK`."""
    return _DECIDERS[value](op, channel, who)


_DOING = {
    "join": "joining {!r}",
    "send": "sending to {!r}",
    "presence": "listing the members of {!r}",
    "history": "reading the history of {!r}",
}


def _doing(op: str, channel: str) -> str:
    return _DOING[op].format(channel)


def listed_users(channel: str) -> tuple[str, ...] | None:
    """The users a user-limited channel's name lists (after its last ``#``), or None when
    the name lists none validly (no ``#``, an empty id, more than :data:`MAX_LISTED_USERS`)."""
    head, sep, tail = channel.rpartition("#")
    if not sep:
        return None
    users = tuple(tail.split(","))
    if len(users) > MAX_LISTED_USERS or not all(users):
        return None
    return users


def check_listed(op: str, channel: str, user: str | None) -> Refusal | None:
    """A user-limited channel: only the users its name lists may use it."""
    users = listed_users(channel)
    if users is None:
        return Refusal(
            ErrorCode.INVALID_CHANNEL,
            "user_limited",
            f"{channel!r} must end with '#' and 1-{MAX_LISTED_USERS} comma-separated user ids "
            "(its channel rule is user_limited)",
        )
    if user is None or user not in users:
        return Refusal(
            ErrorCode.FORBIDDEN,
            "user_limited",
            f"{_doing(op, channel)}: only the users its name lists may",
        )
    return None
