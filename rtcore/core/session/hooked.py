"""Requests the app's backend decides (sans-IO; docs/hooks.md): a hello asked of the
connect hook, a join of a ``join = "hook"`` channel, a send to a ``send = "hook"`` channel.

Each makes a :class:`Deferred` whose ``wait()`` is the trio layer's hook call (bounded by the
hook's timeout; the breaker and the concurrency bound are the hook client's): the
connection reads nothing more meanwhile, so replies stay in request order, and only this
connection waits. ``resume`` turns the verdict into the reply: ``hook_unavailable`` when the
backend could not answer, the backend's own code when it refused.
"""

from __future__ import annotations

import http.cookies
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from rtcore.core.app import App
from rtcore.core.auth import Principal
from rtcore.core.hooks.answers import ABSENT, Verdict
from rtcore.core.hooks.ports import HookCaller, HookOutcome, Unavailable
from rtcore.core.permissions import NO_GRANTS
from rtcore.core.session.context import Context, Result
from rtcore.core.session.deferred import Deferred, unused_then
from rtcore.core.session.hello import admit, check_profile
from rtcore.protocol import CloseCode, ErrorCode, RemoteProtocolError
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from rtcore.protocol.values import check as check_value

UNAVAILABLE = "the app's {kind} hook is unavailable ({reason}); retry later"
Admitted = Callable[[Any, float], "Result | Deferred"]
"""What follows an allowed request: ``(the member's info or the data to send, wall)`` ->
the reply."""


def hooks_of(session: Context, kind: str) -> HookCaller:
    app = session.app
    assert app is not None
    if app.hooks is None or app.settings.hooks is None or app.settings.hooks.url(kind) is None:
        raise RemoteProtocolError(
            f"the app has no {kind} hook configured", code=ErrorCode.HOOK_UNAVAILABLE
        )
    return app.hooks


def join(
    session: Context, frame: f.Join, now: float, wall: float, admitted: Admitted
) -> Deferred | Result:
    """Ask the join hook (or its cache: ``join_cache_ttl``), then go on with the member's
    ``info`` (None: none)."""
    hooks = hooks_of(session, "join")
    app, member = session.app, session.member
    assert app is not None and member is not None
    check_value(frame.data, "data")
    user = member.user
    cached = None if user is None else hooks.cached_join(user, frame.channel, now)
    if cached is not None:
        return _allowed_or_refused(cached, _info(cached), wall, admitted)
    body = {
        "hook": "join",
        "app": app.name,
        "conn": session.conn_id,
        "user": user,
        "channel": frame.channel,
        "data": frame.data,
    }

    def decided(verdict: Verdict, now: float, wall: float) -> Result | Deferred:
        if user is not None:
            hooks.cache_join(user, frame.channel, verdict, now)
        return _allowed_or_refused(verdict, _info(verdict), wall, admitted)

    return Deferred(
        frame.id,
        lambda: hooks.call("join", body),
        unused_then,
        _resume(session, frame.id, "join", decided),
        timeout=hooks.timeout,
    )


def _info(verdict: Verdict) -> Any:
    return None if verdict.info is ABSENT else verdict.info


def send(session: Context, frame: f.Send, admitted: Admitted) -> Deferred:
    """Ask the publish hook, then go on with the data to send (the hook's, if given)."""
    hooks = hooks_of(session, "publish")
    app, member = session.app, session.member
    assert app is not None and member is not None
    body = {
        "hook": "publish",
        "app": app.name,
        "conn": session.conn_id,
        "user": member.user,
        "channel": frame.channel,
        "event": frame.event,
        "data": frame.data,
    }

    def decided(verdict: Verdict, now: float, wall: float) -> Result | Deferred:
        data = frame.data if verdict.data is ABSENT else verdict.data
        check_value(data, "data")
        return _allowed_or_refused(verdict, data, wall, admitted)

    return Deferred(
        frame.id,
        lambda: hooks.call("publish", body),
        unused_then,
        _resume(session, frame.id, "publish", decided),
        timeout=hooks.timeout,
    )


def _allowed_or_refused(
    verdict: Verdict, value: Any, wall: float, admitted: Admitted
) -> Result | Deferred:
    if not verdict.allow:
        raise HookRefusal(verdict.code, verdict.message)
    return admitted(value, wall)


class HookRefusal(RemoteProtocolError):
    """The backend refused: the ``err`` carries its own code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=ErrorCode.FORBIDDEN)
        self.backend_code = code


def _resume(
    session: Context,
    request_id: int,
    kind: str,
    decided: Callable[[Verdict, float, float], Result | Deferred],
) -> Callable[[Any, str | None, float, float], Close | None]:
    def resume(outcome: HookOutcome, failure: str | None, now: float, wall: float) -> Close | None:
        if failure is not None or isinstance(outcome, Unavailable):
            reason = failure if failure is not None else getattr(outcome, "reason", "?")
            message = UNAVAILABLE.format(kind=kind, reason=reason)
            return session.refuse(request_id, ErrorCode.HOOK_UNAVAILABLE.value, message)
        try:
            result = decided(outcome, now, wall)
        except HookRefusal as exc:
            return session.refuse(request_id, exc.backend_code, exc.message)
        except RemoteProtocolError as exc:
            return session.refuse(request_id, exc.code.value, exc.message)
        return session.answer(request_id, result)

    return resume


# -- the connect hook, at hello ----------------------------------------------------------------

Welcome = Callable[[Principal | None, Any, float], Close | None]
"""Completes the hello: ``(principal, profile, wall)`` -> a Close, or None (welcomed)."""


def connect(
    app: App,
    session: Context,
    frame: f.Hello,
    handshake: Iterable[tuple[bytes, bytes]],
    principal: Principal | None,
    welcome: Welcome,
) -> Deferred | Close:
    """Ask the connect hook (after the hello's checks, §3.4 steps 1-3 and 5); its answer
    names the user (and profile, grants) or refuses. Then ``session_required`` and the
    connection cap are checked again, the hook's user counting as signed in."""
    hooks = app.hooks
    assert hooks is not None
    try:
        check_value(frame.data, "data")
    except RemoteProtocolError as exc:
        return Close(CloseCode.HELLO_EXPECTED, f"hello: {exc.message}")
    body = _connect_body(app, session, frame, handshake, principal)
    max_profile = session.limits.max_profile_bytes

    def resume(outcome: HookOutcome, failure: str | None, now: float, wall: float) -> Close | None:
        if failure is not None or isinstance(outcome, Unavailable):
            reason = failure if failure is not None else getattr(outcome, "reason", "?")
            return Close(
                CloseCode.HOOK_UNAVAILABLE, UNAVAILABLE.format(kind="connect", reason=reason)
            )
        return _connected(app, outcome, principal, frame.profile, max_profile, welcome, wall)

    return Deferred(
        0, lambda: hooks.call("connect", body), unused_then, resume, timeout=hooks.timeout
    )


def _connected(
    app: App,
    outcome: Verdict,
    principal: Principal | None,
    profile: Any,
    max_profile: int,
    welcome: Welcome,
    wall: float,
) -> Close | None:
    """The connect hook answered: refused, or the user and profile it gives, checked again
    against ``session_required`` and the connection cap, then welcomed."""
    if not outcome.allow:
        return Close(CloseCode.CONNECT_REFUSED, f"{outcome.code}: {outcome.message}")
    who = signed_in(outcome, principal)
    if isinstance(who, Close):
        return who
    if outcome.profile is not ABSENT:
        profile = outcome.profile
    try:
        check_profile(profile, "profile", max_profile)
    except RemoteProtocolError as exc:
        return Close(CloseCode.HOOK_UNAVAILABLE, f"the connect hook's {exc.message}")
    return admit(app, who, reconnect=True) or welcome(who, profile, wall)


def _connect_body(
    app: App,
    session: Context,
    frame: f.Hello,
    handshake: Iterable[tuple[bytes, bytes]],
    principal: Principal | None,
) -> dict[str, Any]:
    """What the connect hook is asked (docs/hooks.md)."""
    assert app.settings.hooks is not None
    headers, cookies = handshake_fields(handshake, app.settings.hooks.headers)
    return {
        "hook": "connect",
        "app": app.name,
        "conn": session.conn_id,
        "ip": session.remote,
        "user": principal.user if principal else None,
        "data": frame.data,
        "headers": headers,
        "cookies": cookies,
    }


def signed_in(outcome: Verdict, principal: Principal | None) -> Principal | Close | None:
    """Who the connection is after the connect hook's answer: the hook's ``user`` (else the
    token's), with the hook's ``grants`` (else, for the token's own user, the token's).
    The token's session, expiry and ``subscribe`` claim stay only for the token's user."""
    if outcome.user is None and outcome.grants is None:
        return principal
    user = outcome.user if outcome.user is not None else principal.user if principal else None
    if user is None:
        return Close(
            CloseCode.HOOK_UNAVAILABLE,
            "the connect hook gave grants without a user (and the hello has no token)",
        )
    if principal is None or principal.user != user:
        grants = NO_GRANTS if outcome.grants is None else outcome.grants
        return Principal(user, None, None, grants=grants)
    grants = principal.grants if outcome.grants is None else outcome.grants
    return attrs.evolve(principal, grants=grants)


def handshake_fields(
    headers: Iterable[tuple[bytes, bytes]], wanted: Iterable[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The chosen headers (lower-cased names; repeated ones joined with ", ") and the
    cookies of an upgrade request, for the connect hook."""
    chosen = set(wanted)
    found: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "cookie":
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            try:
                jar.load(value)
            except http.cookies.CookieError:
                continue
            cookies.update({k: m.value for k, m in jar.items()})
        if name in chosen:
            found[name] = f"{found[name]}, {value}" if name in found else value
    return found, cookies
