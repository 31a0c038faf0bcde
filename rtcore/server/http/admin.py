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
writes the config file atomically (a temporary file in the same directory, fsync, rename),
then applies it exactly as a reload (``SIGHUP``) does.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sized
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import attrs

from rtcore import operations as api
from rtcore.config import editor as settings_file
from rtcore.config.model import AppConfig, Config, ConfigError
from rtcore.core.app import App
from rtcore.server import queries
from rtcore.server.flusher import Flusher
from rtcore.server.http import admin_integrations
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
        return save(server, app.name, req.json())
    raise api.ApiError(404, "not_found", f"no such endpoint: {req.method} {req.path}")


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


async def state(server: Administered) -> dict[str, Any]:
    """Live statistics, every app with its largest channels, and its editable settings."""
    path = server.config_path
    text = _read(path) if path is not None else None
    apps = []
    for name, app in list(server.apps.items()):
        largest = await queries.largest_channels(app, TOP_CHANNELS)
        apps.append(
            {
                "name": name,
                "connections": len(app.table),
                "channels": len(app.table.channels()),
                "top_channels": [{"name": ch, "members": n} for ch, n in largest],
                "settings": _settings_view(text, app.settings),
                "integrations": admin_integrations.health(server, name),
            }
        )
    return {
        "server": {
            "connections": len(server.connections),
            "slow_consumers": server.flusher.slow_consumers,
        },
        "config_file": str(path) if path is not None else None,
        "editable": text is not None,
        "apps": apps,
    }


def _settings_view(text: str | None, settings: AppConfig) -> dict[str, Any]:
    if text is not None:
        try:
            return settings_file.view(text, settings.name)
        except ConfigError:
            pass  # an app from overrides, not the file: shown read-only below
    return settings_file.view_config(settings)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise api.ApiError(409, "config_unreadable", f"cannot read {path}: {exc.strerror}") from exc


# -- saving ---------------------------------------------------------------------------------------


def save(server: Administered, app: str, change: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Validate, write atomically, apply as a reload. Every broken rule is reported at once."""
    path = server.config_path
    if path is None:
        raise api.ApiError(
            409,
            "no_config_file",
            "rtcore serve was started without --config: there is no file to save settings to",
        )
    try:
        edited = settings_file.edit(_read(path), app, change, env=os.environ, base=path.parent)
    except ConfigError as exc:
        return 400, {
            "code": "invalid_settings",
            "message": "the settings were not saved: " + "; ".join(exc.errors),
            "errors": list(exc.errors),
        }
    _write_atomically(path, edited.text)
    closed = server.reload(attrs.evolve(edited.config, **server.config_overrides))
    log.info("settings page: saved app %r to %s; %d connections closed", app, path, closed)
    if server.on_settings_saved is not None:
        server.on_settings_saved()  # e.g. the other workers reload the file too
    return 200, {
        "saved": str(path),
        "closed": closed,
        "generated_keys": [{"name": n, "key": k} for n, k in edited.generated_keys],
        "settings": settings_file.view(edited.text, app),
    }


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a part (same directory: one rename)."""
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
