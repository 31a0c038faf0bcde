"""Channel tokens (sans-IO, protocol.md §4.4.2): a JWT the app's backend signs with the app's
session key, admitting one connection's user to one channel until its ``exp``.

Claims: ``channel`` (the exact channel), ``sub`` (the connection's user; absent for an
anonymous connection), ``exp`` (required), optional ``ops`` (what it allows; default join,
presence, history), optional ``info`` (a value shown with the member in that channel) and
optional ``app`` (when present, the app's name). Every refusal is ``invalid_channel_token``
with a message saying which check failed; ``wall`` (Unix time) is passed in.
"""

from __future__ import annotations

from typing import Any

import jwt

from rtcore.core.auth import SessionSettings, decode_jwt
from rtcore.core.permissions import DEFAULT_TOKEN_OPS, OPERATIONS, ChannelToken
from rtcore.protocol import ErrorCode, RemoteProtocolError, codec
from rtcore.protocol.names import refuse
from rtcore.protocol.values import check as check_value


def _invalid(message: str) -> RemoteProtocolError:
    return refuse(ErrorCode.INVALID_CHANNEL_TOKEN, message)


def verify_channel_token(
    settings: SessionSettings | None,
    token: str,
    *,
    app: str,
    channel: str,
    user: str | None,
    wall: float,
    max_info_bytes: int,
) -> ChannelToken:
    """The token's grant for ``channel``, or a refusal (``invalid_channel_token``)."""
    if settings is None or settings.key is None:
        raise _invalid(f"app {app!r} takes no channel tokens (it has no session settings)")
    claims = _decode(settings, token)
    if claims.get("app", app) != app:
        raise _invalid(f"the channel token is for app {claims.get('app')!r}, not {app!r}")
    if claims.get("channel") != channel:
        raise _invalid(f"the channel token is for {claims.get('channel')!r}, not {channel!r}")
    sub = claims.get("sub")
    if sub != user:
        whose = "an anonymous connection" if sub is None else f"user {sub!r}"
        raise _invalid(f"the channel token is for {whose}, not this connection's user")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise _invalid("the channel token's 'exp' must be a number")
    if wall > exp + settings.leeway:
        raise _invalid(f"the channel token for {channel!r} has expired")
    return ChannelToken(channel, float(exp), _ops(claims), _info(claims, max_info_bytes))


def _decode(settings: SessionSettings, token: str) -> dict[str, Any]:
    try:
        return decode_jwt(settings, token, require="exp")
    except jwt.PyJWTError as exc:
        raise _invalid(f"invalid channel token: {exc}") from None


def _ops(claims: dict[str, Any]) -> frozenset[str]:
    ops = claims.get("ops")
    if ops is None:
        return DEFAULT_TOKEN_OPS
    if not isinstance(ops, list) or any(op not in OPERATIONS for op in ops):
        raise _invalid(f"the channel token's 'ops' must list some of {', '.join(OPERATIONS)}")
    return frozenset(ops)


def _info(claims: dict[str, Any], max_bytes: int) -> Any:
    info = claims.get("info")
    try:
        check_value(info, "info")
    except RemoteProtocolError as exc:
        raise _invalid(f"the channel token's {exc.message}") from None
    if len(codec.pack(info)) > max_bytes:
        raise _invalid(f"the channel token's 'info' exceeds {max_bytes} bytes")
    return info
