"""What a hook is asked and what it may answer (sans-IO; docs/hooks.md has every field).

A hook answers HTTP 200 with a JSON object: ``{"allow": true, ...}`` or ``{"allow": false,
"code": ..., "message": ...}``. Anything else -- another status, a body that is not such an
object, a field of the wrong shape -- is the backend's failure (:class:`AnswerError`): the
client is refused ``hook_unavailable`` and the circuit breaker counts it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from rtcore.core.permissions import Grants, GrantsError, parse_grants
from rtcore.protocol import RemoteProtocolError
from rtcore.protocol.values import check as check_value

MAX_MESSAGE = 500
"""Characters of a refusal's message kept (longer ones are cut)."""
CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
DEFAULT_CODE = "forbidden"
ABSENT: Any = object()
"""A field the answer did not give (distinct from a JSON null)."""


class AnswerError(Exception):
    """The backend's answer is not one the docs allow; the message says what is wrong."""


@attrs.frozen
class Verdict:
    """A hook's answer, checked."""

    allow: bool
    code: str = DEFAULT_CODE
    """A refusal's code (the client's ``err`` code, or the connect close's reason prefix)."""
    message: str = ""
    user: str | None = None
    """connect: the connection's user (None: as the hello's token said, or anonymous)."""
    profile: Any = ABSENT
    """connect: the member profile instead of the hello's."""
    grants: Grants | None = None
    """connect: ``{pattern: [operation, ...]}`` compiled as a session token's grants claim
    is (rtcore.core.permissions.parse_grants: the same bounds); None: not given."""
    info: Any = ABSENT
    """join: the member's ``info`` in that channel."""
    data: Any = ABSENT
    """publish: the message data instead of the client's."""


_FIELDS = {
    "connect": {"allow", "code", "message", "user", "profile", "grants"},
    "join": {"allow", "code", "message", "info"},
    "publish": {"allow", "code", "message", "data"},
}


def parse(kind: str, status: int, body: bytes) -> Verdict:
    """The verdict of a ``kind`` hook's HTTP answer, or :class:`AnswerError`."""
    if status != 200:
        raise AnswerError(f"the {kind} hook answered HTTP {status}")
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AnswerError(f"the {kind} hook's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise AnswerError(f'the {kind} hook\'s answer is not an object with "allow": true/false')
    unknown = sorted(set(answer) - _FIELDS[kind])
    if unknown:
        raise AnswerError(f"the {kind} hook's answer has unknown fields: {', '.join(unknown)}")
    if not answer["allow"]:
        return _refusal(kind, answer)
    return Verdict(
        True,
        user=_user(answer),
        profile=_value(answer, "profile", kind),
        grants=_grants(answer.get("grants")),
        info=_value(answer, "info", kind),
        data=_value(answer, "data", kind),
    )


def _refusal(kind: str, answer: dict[str, Any]) -> Verdict:
    code = answer.get("code", DEFAULT_CODE)
    if not isinstance(code, str) or not CODE.fullmatch(code):
        raise AnswerError(f"the {kind} hook's code must match {CODE.pattern}")
    message = answer.get("message", f"refused by the app ({kind} hook)")
    if not isinstance(message, str):
        raise AnswerError(f"the {kind} hook's message must be a string")
    return Verdict(False, code, message[:MAX_MESSAGE])


def _user(answer: dict[str, Any]) -> str | None:
    user = answer.get("user")
    if user is not None and (not isinstance(user, str) or not 1 <= len(user) <= 256):
        raise AnswerError("the connect hook's user must be a string of 1-256 characters")
    return user


def _value(answer: dict[str, Any], key: str, kind: str) -> Any:
    if key not in answer:
        return ABSENT
    try:
        check_value(answer[key], key)
    except RemoteProtocolError as exc:
        raise AnswerError(f"the {kind} hook's {exc.message}") from None
    return answer[key]


def _grants(raw: object) -> Grants | None:
    if raw is None:
        return None
    try:
        return parse_grants(raw)
    except GrantsError as exc:
        raise AnswerError(f"the connect hook's grants: {exc}") from None
