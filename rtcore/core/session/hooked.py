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

from rtcore.core.auth import Principal
from rtcore.core.hooks.answers import ABSENT, Verdict
from rtcore.core.hooks.ports import HookCaller, HookOutcome, Unavailable
from rtcore.core.session.context import Context, Result
from rtcore.core.session.deferred import Deferred, unused_then
from rtcore.protocol import CloseCode, ErrorCode, RemoteProtocolError
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from rtcore.protocol.values import check as check_value

UNAVAILABLE = "the app's {kind} hook is unavailable ({reason}); retry later"
Proceed = Callable[[Any, float, float], "Result | Deferred"]
"""What follows an allowed request: ``(verdict's data or info, now, wall)`` -> the reply."""


def hooks_of(session: Context, kind: str) -> HookCaller:
    app = session.app
    assert app is not None
    if app.hooks is None or app.settings.hooks is None or app.settings.hooks.url(kind) is None:
        raise RemoteProtocolError(
            f"the app has no {kind} hook configured", code=ErrorCode.HOOK_UNAVAILABLE
        )
    return app.hooks


def join(session: Context, frame: f.Join, proceed: Proceed) -> Deferred | Result:
    """Ask the join hook (or its cache), then ``proceed`` with the member's ``info``."""
    hooks = hooks_of(session, "join")
    app, member = session.app, session.member
    assert app is not None and member is not None
    check_value(frame.data, "data")
    user = member.user
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
        return _allowed_or_refused(verdict, verdict.info, now, wall, proceed)

    return Deferred(
        frame.id,
        lambda: hooks.call("join", body),
        unused_then,
        _resume(session, frame.id, "join", decided),
        timeout=hooks.timeout,
    )


def cached_join(session: Context, frame: f.Join, now: float) -> Verdict | None:
    """A join answer remembered for this user and channel (``join_cache_ttl``)."""
    hooks = hooks_of(session, "join")
    user = session.member.user if session.member is not None else None
    return None if user is None else hooks.cached_join(user, frame.channel, now)


def send(session: Context, frame: f.Send, proceed: Proceed) -> Deferred:
    """Ask the publish hook, then ``proceed`` with the data to send (the hook's, if given)."""
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
        return _allowed_or_refused(verdict, data, now, wall, proceed)

    return Deferred(
        frame.id,
        lambda: hooks.call("publish", body),
        unused_then,
        _resume(session, frame.id, "publish", decided),
        timeout=hooks.timeout,
    )


def allowed(
    verdict: Verdict, value: Any, now: float, wall: float, proceed: Proceed
) -> Result | Deferred:
    """A cached verdict: as if the hook had just answered it."""
    return _allowed_or_refused(verdict, value, now, wall, proceed)


def _allowed_or_refused(
    verdict: Verdict, value: Any, now: float, wall: float, proceed: Proceed
) -> Result | Deferred:
    if not verdict.allow:
        raise HookRefusal(verdict.code, verdict.message)
    return proceed(value, now, wall)


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
    hooks: HookCaller,
    body: dict[str, Any],
    principal: Principal | None,
    profile: Any,
    welcome: Welcome,
) -> Deferred:
    """Ask the connect hook; its answer names the user (and profile, grants) or refuses."""

    def resume(outcome: HookOutcome, failure: str | None, now: float, wall: float) -> Close | None:
        if failure is not None or isinstance(outcome, Unavailable):
            reason = failure if failure is not None else getattr(outcome, "reason", "?")
            return Close(
                CloseCode.HOOK_UNAVAILABLE, UNAVAILABLE.format(kind="connect", reason=reason)
            )
        if not outcome.allow:
            return Close(CloseCode.CONNECT_REFUSED, f"{outcome.code}: {outcome.message}")
        who = principal
        if outcome.user is not None or outcome.grants is not None:
            user = (
                outcome.user if outcome.user is not None else principal.user if principal else None
            )
            if user is None:
                return Close(
                    CloseCode.HOOK_UNAVAILABLE,
                    "the connect hook gave grants without a user (and the hello has no token)",
                )
            same = principal is not None and principal.user == user
            who = Principal(
                user,
                principal.session if same and principal else None,
                principal.expires if same and principal else None,
                grants=outcome.grants,
            )
        return welcome(who, profile if outcome.profile is ABSENT else outcome.profile, wall)

    return Deferred(
        0, lambda: hooks.call("connect", body), unused_then, resume, timeout=hooks.timeout
    )


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
