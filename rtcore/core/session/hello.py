"""The hello checks (sans-IO), in protocol.md §3.4's order: a refusal never reveals anything
about a later credential. Pure functions of the hello, the apps and the clocks: each returns
the :class:`Close` that refuses, or what the session needs to go on.
"""

from __future__ import annotations

from collections.abc import Mapping

from rtcore.config.model import Config
from rtcore.core.app import App
from rtcore.core.auth import CredentialError, Principal, check_api_key, verify_session
from rtcore.core.restrictions import check_restrictions
from rtcore.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode, RemoteProtocolError, codec
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from rtcore.protocol.names import refuse
from rtcore.protocol.values import PROFILE
from rtcore.protocol.values import check as check_value


def check_hello(
    frame: f.Hello,
    apps: Mapping[str, App],
    config: Config,
    now: float,
    wall: float,
    handshake: tuple[str | None, str] = (None, "?"),
) -> tuple[App, Principal | None] | Close:
    """The app the hello connects to and its signed-in user (None: anonymous), or the
    refusal. ``handshake``: the upgrade's Origin header (None: it had none) and the client's
    address, which an API key's restrictions check."""
    if frame.version != PROTOCOL_VERSION:
        return Close(
            CloseCode.UNSUPPORTED_VERSION,
            f"protocol version {frame.version} is not supported; this server speaks "
            f"{PROTOCOL_VERSION}",
        )
    name = frame.app if frame.app is not None else config.default_app
    app = apps.get(name) if name is not None else None
    if app is None:
        return Close(CloseCode.UNKNOWN_APP, f"unknown app {name!r}" if name else "app required")
    # protocol.md §3.4's order: nothing about a token is revealed to a client the app or
    # its API key refuses.
    close = open_to(app, frame.key, wall, *handshake)
    if close is not None:
        return close
    principal = sign_in(app, frame.token, now, wall, config.limits.max_channels)
    if isinstance(principal, Close):
        return principal
    close = admit(app, principal, reconnect=True, hook_signs_in=asks_connect(app))
    if close is not None:
        return close
    try:
        check_profile(frame.profile, "profile", config.limits.max_profile_bytes)
    except RemoteProtocolError as exc:  # a hello has no id to answer: not a valid hello
        return Close(CloseCode.HELLO_EXPECTED, f"hello: {exc.message}")
    return app, principal


def open_to(
    app: App, key: str | None, wall: float, origin: str | None, address: str
) -> Close | None:
    """Steps 1-2 of §3.4: the app is enabled; its API key, when it requires one, with the
    key's restrictions (realtime, origins, addresses: rtcore.core.restrictions)."""
    settings = app.settings
    if not settings.enabled:
        return Close(CloseCode.APP_DISABLED, f"realtime is disabled for app {app.name!r}")
    if settings.api_key_required:
        try:
            matched = check_api_key(settings.api_keys, key, wall)
        except CredentialError as exc:
            return Close(exc.code, exc.message)
        refused = check_restrictions(
            matched.realtime, matched.allowed_origins, matched.allowed_ips, origin, address
        )
        if refused is not None:
            reason, close = refused
            counts = app.statistics.key_refusals
            counts[reason] = counts.get(reason, 0) + 1
            return close
    return None


def sign_in(
    app: App, token: str | None, now: float, wall: float, max_channels: int
) -> Principal | Close | None:
    """Step 3 of §3.4: the token, when present, verifies, names a live session, and its
    ``subscribe`` claim lists no more channels than a connection may be in."""
    if token is None:
        return None
    if app.settings.session is None:
        return Close(CloseCode.SESSION_INVALID, "this app accepts no session tokens")
    try:
        principal = verify_session(app.settings.session, token, wall)
    except CredentialError as exc:
        return Close(exc.code, exc.message)
    if len(principal.subscribe) > max_channels:
        return Close(
            CloseCode.SESSION_INVALID,
            f"the token's subscribe claim lists {len(principal.subscribe)} channels; a "
            f"connection may be in at most {max_channels}",
        )
    if app.session_ended(principal.user, principal.session, now):
        return Close(CloseCode.SESSION_ENDED, "this session was ended; sign in again")
    return principal


def admit(
    app: App, principal: Principal | None, *, reconnect: bool, hook_signs_in: bool = False
) -> Close | None:
    """Steps 4-5 of §3.4: a session when the app requires one (unless the connect hook is
    still to be asked: its user counts, and this is checked again after it answers); the
    connection cap."""
    settings = app.settings
    if settings.session_required and principal is None and not hook_signs_in:
        return Close(CloseCode.SESSION_MISSING, "this app requires a signed-in user")
    if reconnect and len(app.table) >= settings.max_connections:
        return Close(
            CloseCode.TOO_MANY_CONNECTIONS,
            f"app {app.name!r} has reached its {settings.max_connections} connections",
        )
    return None


def asks_connect(app: App) -> bool:
    """Whether a hello to ``app`` is put to its connect hook (docs/hooks.md)."""
    hooks = app.settings.hooks
    return app.hooks is not None and hooks is not None and hooks.connect_url is not None


def check_profile(profile: object, field: str, max_bytes: int) -> None:
    """A profile must be a valid value (protocol.md §4.3.1) within the profile budget
    (``values.PROFILE``: arrays, maps and elements) and ``max_profile_bytes``."""
    check_value(profile, field, PROFILE)
    if len(codec.pack(profile)) > max_bytes:
        raise refuse(ErrorCode.PROFILE_TOO_LARGE, f"profile exceeds {max_bytes} bytes")
