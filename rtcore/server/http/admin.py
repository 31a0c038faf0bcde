"""The Realtime settings page: ``/admin`` on the server-API port (docs/admin.md).

Security model:

* The page's files are public and hold no data. Every data request (``/admin/api/...``)
  carries ``Authorization: Bearer <server.admin_secret>``, compared in constant time. A
  browser never attaches that header by itself, so another site cannot make an operator's
  browser act (no ambient credential: CSRF-safe by construction); the page keeps the secret in
  ``sessionStorage`` for its tab only.
* Requests that change settings must be same-origin (an ``Origin`` header, when present, must
  be this server's) and JSON (a cross-site form cannot send ``application/json`` without a
  preflight, which rtcore never grants).
* The page is served with a strict Content-Security-Policy (only its own files; no inline
  script) and may not be framed.

Saving validates the change with the same rules as ``rtcore check-config`` (same messages),
writes the config file atomically (config_file.py: under the file's lock, only if the file is
still at the version the page loaded, else 409 ``stale_settings``; a temporary file beside it,
fsync, rename; symlinks and modes kept), then applies it exactly as a reload (``SIGHUP``) does.
Parsing and file I/O run in a worker thread; the state's settings views are parsed once per
change of the file, not per poll.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Callable, Mapping, Sized
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import attrs
import trio

from rtcore import operations as api
from rtcore.config import editor as settings_file
from rtcore.config.model import Config, ConfigError
from rtcore.core.app import App
from rtcore.server import queries
from rtcore.server.flusher import Flusher
from rtcore.server.http import admin_integrations, config_file
from rtcore.server.http.messages import Answer, Request, Text

log = logging.getLogger("rtcore.admin")

PREFIX = "/admin"
FILES = {
    "/admin": ("index.html", "text/html; charset=utf-8"),
    "/admin/": ("index.html", "text/html; charset=utf-8"),
    "/admin/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/admin/admin.css": ("admin.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = (
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)
_APP_PATH = re.compile(r"/admin/api/apps/(?P<app>[^/]+)(?P<rest>/.*)?")
_MEMBERS = re.compile(r"/channels/(?P<channel>[^/]+)/members")
TOP_CHANNELS = 50


class Administered(Protocol):
    """What the settings page reads and changes of the server."""

    @property
    def config(self) -> Config: ...

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def connections(self) -> Sized: ...

    @property
    def flusher(self) -> Flusher: ...

    @property
    def config_path(self) -> Path | None: ...

    @property
    def config_overrides(self) -> Mapping[str, Any]: ...

    @property
    def on_settings_saved(self) -> Callable[[], None] | None: ...

    def reload(self, config: Config) -> int: ...


def is_admin(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def answer(server: Administered, req: Request) -> Answer:
    """Serve one request under ``/admin``; raises ApiError for refusals (4xx)."""
    if req.path in FILES:
        if req.method != "GET":
            raise api.ApiError(405, "method_not_allowed", "use GET")
        name, kind = FILES[req.path]
        body = resources.files("rtcore.server.http").joinpath("admin_page", name).read_bytes()
        return 200, Text(body, kind, PAGE_HEADERS)
    if not req.path.startswith(PREFIX + "/api/"):
        raise api.ApiError(404, "not_found", f"no such page: {req.path}")
    _authorize(server, req)
    if req.path == "/admin/api/state" and req.method == "GET":
        return 200, await state(server)
    match = _APP_PATH.fullmatch(req.path)
    if match is None:
        raise api.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")
    app = server.apps.get(unquote(match["app"]))
    if app is None:
        raise api.ApiError(404, "unknown_app", f"this server hosts no app {match['app']!r}")
    rest = match["rest"] or ""
    members = _MEMBERS.fullmatch(rest)
    if members is not None and req.method == "GET":
        channel = unquote(members["channel"])
        limit = server.config.limits.max_members_page
        return 200, api.members(app, channel, None, min(100, limit), limit).result
    if rest == "/settings" and req.method == "PUT":
        _same_origin(req)
        return await _put_settings(server, app.name, req)
    raise api.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")


async def _put_settings(server: Administered, app: str, req: Request) -> Answer:
    body: Any = req.json()
    version = req.headers.get("if-match", "").strip('"') or None
    if isinstance(body, dict) and "version" in body:
        body = dict(body)
        version = body.pop("version")
    return await save(server, app, body, version)


def _authorize(server: Administered, req: Request) -> None:
    secret = server.config.admin_secret
    if secret is None:
        raise api.ApiError(
            403,
            "admin_disabled",
            "the settings page is off: set server.admin_secret_env (32 characters or more)",
        )
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), secret.encode()
    ):
        raise api.ApiError(401, "unauthorized", "Authorization: Bearer <server.admin_secret>")


def _same_origin(req: Request) -> None:
    origin = req.headers.get("origin")
    host = req.headers.get("host", "")
    if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
        raise api.ApiError(403, "cross_origin", "settings can only be changed from this page")
    kind = req.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        raise api.ApiError(415, "unsupported_media_type", "send application/json")


# -- reading --------------------------------------------------------------------------------------


@attrs.frozen
class _Parsed:
    """The config file as last parsed: its version and its apps' settings views."""

    version: str
    views: dict[str, dict[str, Any]]


_PARSED: dict[Path, _Parsed] = {}
"""The settings views of each config file, parsed once per version of the file (not per poll)."""
_PARSED_FILES = 8


async def state(server: Administered) -> dict[str, Any]:
    """Live statistics, every app with its largest channels, and its editable settings."""
    path = server.config_path
    parsed = await _parsed(path) if path is not None else None
    apps = []
    for name, app in list(server.apps.items()):
        largest = await queries.largest_channels(app, TOP_CHANNELS)
        view = parsed.views.get(name) if parsed is not None else None
        apps.append(
            {
                "name": name,
                "connections": len(app.table),
                "channels": len(app.table.channels()),
                "top_channels": [{"name": ch, "members": n} for ch, n in largest],
                # an app from overrides, not the file, is shown as it runs
                "settings": view if view is not None else settings_file.view_config(app.settings),
                "integrations": admin_integrations.health(server, name),
            }
        )
    return {
        "server": {
            "connections": len(server.connections),
            "slow_consumers": server.flusher.slow_consumers,
        },
        "config_file": str(path) if path is not None else None,
        "editable": parsed is not None,
        "version": parsed.version if parsed is not None else None,
        "apps": apps,
    }


async def _parsed(path: Path) -> _Parsed:
    """The file's views: in a worker thread, the file is read and hashed (cheap), and parsed
    only if its version is not the one parsed last."""
    parsed = await trio.to_thread.run_sync(_parse, path, _PARSED.get(path))
    if _PARSED.get(path) is not parsed:
        _PARSED.pop(path, None)
        while len(_PARSED) >= _PARSED_FILES:
            del _PARSED[next(iter(_PARSED))]
        _PARSED[path] = parsed
    return parsed


def _parse(path: Path, last: _Parsed | None) -> _Parsed:
    try:
        snapshot = config_file.read(path)
    except config_file.Unreadable as exc:
        raise api.ApiError(409, "config_unreadable", str(exc)) from None
    if last is not None and last.version == snapshot.version:
        return last
    try:
        views = settings_file.views(snapshot.text)
    except ConfigError:
        views = {}  # not TOML (being edited?): the running settings are shown
    return _Parsed(snapshot.version, views)


# -- saving ---------------------------------------------------------------------------------------


class _Stale(Exception):
    def __init__(self, current: str) -> None:
        super().__init__(current)
        self.current = current


async def save(
    server: Administered, app: str, change: Any, version: str | None
) -> tuple[int, dict[str, Any]]:
    """Validate, write atomically under the file's lock if it is still at ``version``, apply
    as a reload. Every broken rule is reported at once."""
    path = server.config_path
    if path is None:
        raise api.ApiError(
            409,
            "no_config_file",
            "rtcore serve was started without --config: there is no file to save settings to",
        )
    if not isinstance(version, str) or not version:
        raise api.ApiError(
            428,
            "version_required",
            "send the config file's version the settings were loaded at "
            "(the state's 'version', as 'version' in the body or If-Match)",
        )
    try:
        edited, view = await trio.to_thread.run_sync(_edit_file, path, app, change, version)
    except (ConfigError, _Stale, config_file.Unreadable, OSError) as exc:
        return _not_saved(path, exc)
    closed = server.reload(attrs.evolve(edited.config, **server.config_overrides))
    log.info("settings page: saved app %r to %s; %d connections closed", app, path, closed)
    if server.on_settings_saved is not None:
        server.on_settings_saved()  # e.g. the other workers reload the file too
    return 200, {
        "saved": str(path),
        "closed": closed,
        "version": config_file.version_of(edited.text.encode()),
        "generated_keys": [{"name": n, "key": k} for n, k in edited.generated_keys],
        "settings": view,
    }


def _not_saved(path: Path, exc: Exception) -> tuple[int, dict[str, Any]]:
    """Why a save did not happen: the change's fault (400), or the file's state (409)."""
    if isinstance(exc, ConfigError):
        return 400, {
            "code": "invalid_settings",
            "message": "the settings were not saved: " + "; ".join(exc.errors),
            "errors": list(exc.errors),
        }
    if isinstance(exc, _Stale):
        return 409, {
            "code": "stale_settings",
            "message": "the settings were not saved: the config file changed since this page "
            "loaded it (another save, or an edit of the file); reload and make the change again",
            "version": exc.current,
        }
    if isinstance(exc, config_file.Unreadable):
        return 409, {"code": "config_unreadable", "message": str(exc)}
    message = f"the settings were not saved: cannot write {path}: {exc}"
    return 409, {"code": "config_unwritable", "message": message}


def _edit_file(
    path: Path, app: str, change: Any, version: str
) -> tuple[settings_file.Edited, dict[str, Any]]:
    """In a worker thread: under the file's lock, check its version, edit and replace it."""
    with config_file.locked(path):
        snapshot = config_file.read(path)
        if snapshot.version != version:  # not a secret: a plain comparison
            raise _Stale(snapshot.version)
        edited = settings_file.edit(snapshot.text, app, change, env=os.environ, base=path.parent)
        config_file.replace(path, edited.text)
    return edited, settings_file.view(edited.text, app)
