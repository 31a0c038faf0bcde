"""The server API's endpoints, ``/v1/apps/<app>/...`` (docs/api.md): each authenticated by the
app's server secret, and run through rtcore.operations as the in-process API runs them."""

from __future__ import annotations

import hmac
import inspect
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import unquote

import trio

from rtcore import operations
from rtcore.config.model import Config
from rtcore.core.app import App
from rtcore.core.members import Member
from rtcore.protocol.close import Close
from rtcore.protocol.position import Position
from rtcore.server import queries
from rtcore.server.http.messages import Answer, Request, field, int_param


class Served(Protocol):
    """What the endpoints need of the server."""

    @property
    def config(self) -> Config: ...

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def wall(self) -> Callable[[], float]: ...

    def close_members(self, closing: list[tuple[Member, Close]]) -> None: ...


Handler = Callable[[Served, App, Request], operations.Outcome | Awaitable[operations.Outcome]]
"""A route: synchronous, or a coroutine where the work is long enough to yield (stats)."""


def _send(server: Served, app: App, req: Request) -> operations.Outcome:
    body = req.json()
    return operations.send(
        app,
        field(body, "channel", str),
        field(body, "event", str),
        body.get("data"),
        server.wall(),
    )


def _broadcast(server: Served, app: App, req: Request) -> operations.Outcome:
    body = req.json()
    return operations.broadcast(app, field(body, "event", str), body.get("data"), server.wall())


async def _members(server: Served, app: App, req: Request) -> operations.Outcome:
    channel, after = req.params["name"], int_param(req, "after")
    page_max = server.config.limits.max_members_page
    if not app.broker.shared:
        return operations.members(app, channel, after, int_param(req, "limit"), page_max)
    limit = operations.members_limit(channel, int_param(req, "limit"), page_max)
    listed = await queries.cluster_members(app, channel, after, limit, broker=server.config.broker)
    return operations.members_listed(*listed)


async def _history(server: Served, app: App, req: Request) -> operations.Outcome:
    epoch, offset = req.query.get("since_epoch"), int_param(req, "since_offset")
    if (epoch is None) != (offset is None):
        raise operations.ApiError(
            400, "bad_request", "give both since_epoch and since_offset, or neither"
        )
    reverse = req.query.get("reverse", "false")
    if reverse not in ("true", "false"):
        raise operations.ApiError(
            400, "bad_request", "query parameter 'reverse' must be true or false"
        )
    since = None if epoch is None or offset is None else Position(epoch, offset)
    config = server.config
    return await queries.read_history(
        app,
        req.params["name"],
        since,
        int_param(req, "limit"),
        reverse == "true",
        wall=server.wall(),
        limits=config.limits,
        broker=config.broker,
    )


def _user_event(server: Served, app: App, req: Request) -> operations.Outcome:
    body = req.json()
    return operations.publish_user_event(
        app,
        field(body, "user", str),
        field(body, "event", str),
        field(body, "session", dict, required=False),
        field(body, "data", dict, required=False),
        trio.current_time(),
        server.wall(),
    )


def _disconnect_user(server: Served, app: App, req: Request) -> operations.Outcome:
    return operations.disconnect_user(app, req.params["name"])


def _disconnect_session(server: Served, app: App, req: Request) -> operations.Outcome:
    revoke = field(req.json(), "revoke", bool, required=False)
    return operations.disconnect_session(
        app,
        req.params["user"],
        req.params["name"],
        bool(revoke),
        trio.current_time(),
        server.wall(),
    )


def _add(server: Served, app: App, req: Request) -> operations.Outcome:
    body = req.json()
    return operations.add_member(
        app,
        req.params["name"],
        body.get("user"),
        body.get("conn"),
        server.config.limits.max_channels,
        server.wall(),
    )


def _remove(server: Served, app: App, req: Request) -> operations.Outcome:
    body = req.json()
    return operations.remove_member(
        app, req.params["name"], body.get("user"), body.get("conn"), body.get("message")
    )


async def _stats(server: Served, app: App, req: Request) -> operations.Outcome:
    sizes = await queries.largest_channels(app, operations.STATS_TOP)
    return operations.stats(app, sizes=sizes)


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/send"), _send),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/broadcast"), _broadcast),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/members"), _members),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/history"), _history),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/add"), _add),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/channels/(?P<name>[^/]+)/remove"), _remove),
    ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/user-events"), _user_event),
    (
        "POST",
        re.compile(r"/v1/apps/(?P<app>[^/]+)/users/(?P<name>[^/]+)/disconnect"),
        _disconnect_user,
    ),
    (
        "POST",
        re.compile(
            r"/v1/apps/(?P<app>[^/]+)/users/(?P<user>[^/]+)/sessions/(?P<name>[^/]+)/disconnect"
        ),
        _disconnect_session,
    ),
    ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/stats"), _stats),
]


async def answer(server: Served, req: Request) -> Answer:
    """Route, authenticate and run one request to an endpoint (405 or 404 if none matches)."""
    allowed = []
    for method, pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if match is None:
            continue
        allowed.append(method)
        if method != req.method:
            continue
        req.params = {k: unquote(v) for k, v in match.groupdict().items()}
        app = _authorize(server, req)
        result = handler(server, app, req)
        outcome = await result if inspect.isawaitable(result) else result
        server.close_members(outcome.closing)
        return 200, outcome.result
    if allowed:
        raise operations.ApiError(405, "method_not_allowed", f"use {' or '.join(allowed)}")
    raise operations.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")


_NO_SECRET = secrets.token_urlsafe(32)
"""Compared against when the app does not exist or has no server_secret: every refusal takes
the same path, so neither the answer nor its timing tells whether an app exists."""


def _authorize(server: Served, req: Request) -> App:
    """The app, if the request carries its server secret; else 401 -- the same 401 for an
    unknown app, an app without a server_secret and a wrong secret (no app enumeration)."""
    app = server.apps.get(req.params["app"])
    secret = app.settings.server_secret if app is not None else None
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    matches = hmac.compare_digest(token.encode(), (secret or _NO_SECRET).encode())
    if app is None or secret is None or scheme.lower() != "bearer" or not matches:
        raise operations.ApiError(
            401, "unauthorized", "Authorization: Bearer <the app's server_secret>"
        )
    return app
