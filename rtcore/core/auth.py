"""Credentials: API keys and session tokens, checked against an app's settings (sans-IO).

API keys are compared in constant time against every configured key (so timing reveals
neither whether nor which key matched). Session tokens are JWTs verified with PyJWT; time
claims (``exp``, ``nbf``) and API key expiry dates are checked here against the ``wall`` time
passed in (Unix seconds: they are calendar dates), with the app's leeway, so that expired can
be told apart from invalid and no clock is read.
"""

from __future__ import annotations

import hmac
from typing import Any

import attrs
import jwt

from rtcore.core.permissions import NO_GRANTS, Grants, GrantsError, parse_grants
from rtcore.core.restrictions import IPNetwork, OriginPattern
from rtcore.protocol import CloseCode
from rtcore.protocol.errors import RemoteProtocolError
from rtcore.protocol.names import check_channel

MAX_SUBSCRIBE = 64
"""Most channels a token's ``subscribe`` claim may list (protocol.md §3.4)."""


@attrs.frozen
class ApiKey:
    """One client API key of an app; several may be valid at once, for rotation."""

    key: str = attrs.field(repr=False)
    expires: float | None = None
    """Unix time after which the key is refused (4012); None: never."""
    name: str = ""
    """A label for logs (the key itself is never logged)."""
    allowed_origins: tuple[OriginPattern, ...] = ()
    """Browser origins this key serves (empty: any); a handshake from another origin, or
    without an Origin header, is refused (4019, 4022)."""
    allowed_ips: tuple[IPNetwork, ...] = ()
    """Client addresses (behind trusted proxies: the forwarded address) this key serves
    (empty: any); others are refused (4021)."""
    realtime: bool = True
    """False: the key may not open realtime connections (4018), e.g. a server-only key."""


@attrs.frozen
class SessionSettings:
    """How an app's session tokens are verified."""

    algorithms: tuple[str, ...] = ("HS256",)
    key: str | None = attrs.field(default=None, repr=False)
    """The HMAC secret (HS*) or the PEM public key (RS*, ES*)."""
    leeway: float = 30.0
    """Seconds of clock skew tolerated on ``exp`` and ``nbf``."""
    issuer: str | None = None
    audience: str | None = None
    session_claim: str = "sid"
    """The claim naming the session (for user events and revocation)."""
    channels_claim: str = "channels"
    """The claim holding the token's channel grants (rtcore.core.permissions.Grants)."""
    expire_connections: bool = False
    """Close a connection (4015) once its token expires, unless the client sent a fresh one
    with a ``refresh`` request. Off: a token is checked when the connection opens."""
    subscribe_claim: str = "subscribe"
    """The claim listing channels the connection joins at hello (protocol.md §3.4)."""


@attrs.frozen
class Principal:
    """Who a connection is, from a verified session token."""

    user: str
    session: str | None
    expires: float | None
    subscribe: tuple[str, ...] = ()
    """The channels the token's ``subscribe`` claim lists: joined at hello."""
    grants: Grants = NO_GRANTS
    """What the token's grants claim allows per channel (protocol.md §4.1)."""


class CredentialError(Exception):
    """A credential was refused; ``code`` is the close code (protocol.md §7)."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_api_key(keys: tuple[ApiKey, ...], presented: str | None, wall: float) -> ApiKey:
    """The matching key, or CredentialError: missing (4010), unknown (4011), expired (4012)."""
    if not presented:
        raise CredentialError(CloseCode.API_KEY_MISSING, "this app requires an API key")
    match: ApiKey | None = None
    given = presented.encode()
    for candidate in keys:  # no early exit: the time taken does not depend on the match
        if hmac.compare_digest(candidate.key.encode(), given):
            match = candidate
    if match is None:
        raise CredentialError(CloseCode.API_KEY_INVALID, "unknown API key")
    if match.expires is not None and wall >= match.expires:
        raise CredentialError(CloseCode.API_KEY_EXPIRED, "the API key has expired")
    return match


def decode_jwt(settings: SessionSettings, token: str, *, require: str) -> dict[str, Any]:
    """A token's claims, its signature, issuer and audience checked with the app's session
    settings (a session or a channel token: ``require`` names the claim it must have); the
    times are the caller's to check, with the leeway. Raises ``jwt.PyJWTError``."""
    assert settings.key is not None
    claims: dict[str, Any] = jwt.decode(
        token,
        settings.key,
        algorithms=list(settings.algorithms),
        audience=settings.audience,
        issuer=settings.issuer,
        options={
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": settings.audience is not None,
            "require": [require],
        },
    )
    return claims


def verify_session(settings: SessionSettings, token: str, wall: float) -> Principal:
    """Verify a session token; CredentialError: invalid (4014) or expired (4015)."""
    if settings.key is None:
        raise CredentialError(CloseCode.SESSION_INVALID, "this app accepts no session tokens")
    try:
        claims = decode_jwt(settings, token, require="sub")
    except jwt.PyJWTError as exc:
        raise CredentialError(CloseCode.SESSION_INVALID, f"invalid session token: {exc}") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise CredentialError(CloseCode.SESSION_INVALID, "the token's 'sub' must be a user id")
    exp = _number(claims.get("exp"), "exp")
    nbf = _number(claims.get("nbf"), "nbf")
    if exp is not None and wall > exp + settings.leeway:
        raise CredentialError(CloseCode.SESSION_EXPIRED, "the session token has expired")
    if nbf is not None and wall < nbf - settings.leeway:
        raise CredentialError(CloseCode.SESSION_INVALID, "the session token is not valid yet")
    session = claims.get(settings.session_claim)
    return Principal(
        sub,
        session if isinstance(session, str) else None,
        exp,
        subscribe=_subscribe(claims, settings.subscribe_claim),
        grants=_grants(claims, settings.channels_claim),
    )


def _subscribe(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    """A session token's channels to join at hello (protocol.md §3.4)."""
    try:
        return parse_subscribe(claims.get(name))
    except ValueError as exc:
        raise CredentialError(
            CloseCode.SESSION_INVALID, f"the token's '{name}' claim {exc}"
        ) from None


def parse_subscribe(value: object) -> tuple[str, ...]:
    """A ``subscribe`` claim's channels (absent: none): an array of at most
    :data:`MAX_SUBSCRIBE` valid channel names (protocol.md §4.2), duplicates dropped, in
    order. ValueError says what is wrong (the caller names the claim)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("must be an array of channel names")
    if len(value) > MAX_SUBSCRIBE:
        raise ValueError(f"lists {len(value)} channels; at most {MAX_SUBSCRIBE} are allowed")
    for i, channel in enumerate(value):
        if not isinstance(channel, str):
            raise ValueError(f"[{i}] must be a channel name (a string)")
        try:
            check_channel(channel)
        except RemoteProtocolError as exc:
            raise ValueError(f"[{i}]: {exc.message}") from None
    return tuple(dict.fromkeys(value))


def _grants(claims: dict[str, Any], name: str) -> Grants:
    """A session token's grants (protocol.md §4.1); a channel token is no session token."""
    if "channel" in claims:
        raise CredentialError(
            CloseCode.SESSION_INVALID, "a channel token is not a session token (it has 'channel')"
        )
    try:
        return parse_grants(claims.get(name))
    except GrantsError as exc:
        raise CredentialError(
            CloseCode.SESSION_INVALID, f"the token's {name!r} claim {exc}"
        ) from None


def _number(value: Any, claim: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialError(CloseCode.SESSION_INVALID, f"the token's '{claim}' must be a number")
    return float(value)


def mint_token(
    settings: SessionSettings,
    user: str,
    wall: float,
    ttl: float,
    *,
    private_key: str | None = None,
    session: str | None = None,
) -> str:
    """A session token for development (``rtcore token``): HS* with the app's secret, or
    RS*/ES* with ``private_key``."""
    claims: dict[str, Any] = {"sub": user, "iat": int(wall), "exp": int(wall + ttl)}
    if session:
        claims[settings.session_claim] = session
    if settings.issuer:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience
    algorithm = settings.algorithms[0]
    key = private_key if not algorithm.startswith("HS") else settings.key
    if key is None:
        raise ValueError(f"{algorithm} tokens need a private key")
    return jwt.encode(claims, key, algorithm=algorithm)
