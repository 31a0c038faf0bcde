"""Settings: a TOML file and command-line flags, validated into frozen objects.

A bad file fails at start-up with a :class:`ConfigError` naming the key and the rule. Without
any file the embedded defaults serve one app, ``default``, on 127.0.0.1:8765.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from rtcore.protocol.errors import RtcoreError

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConfigError(RtcoreError):
    """The configuration is invalid; the message names the key and the rule it breaks."""


@attrs.frozen
class Limits:
    """Bounds on what one connection may use (protocol.md §4.2). Sent to clients in welcome."""

    max_message_bytes: int = 64 * 1024
    """Largest WebSocket message the server accepts; over it the connection closes with 1009."""
    max_profile_bytes: int = 4 * 1024
    """Largest msgpack-encoded profile."""
    max_channels: int = 128
    """Channels one connection may be in at once."""
    max_members_page: int = 1000
    """Largest page of a member listing."""
    outbound_buffer_bytes: int = 1024 * 1024
    """Bytes queued for one connection before it is closed as a slow consumer (4008)."""
    handshake_timeout: float = 10.0
    """Seconds from TCP accept to a valid hello before closing with 4001."""
    heartbeat_interval: float = 25.0
    """Seconds of silence before the server pings; twice that without a frame closes (4009)."""
    close_timeout: float = 2.0
    """Seconds to wait for the peer's close frame before dropping the TCP connection."""
    shutdown_grace: float = 5.0
    """Seconds that connections get to close cleanly on shutdown."""

    def for_clients(self) -> dict[str, int]:
        """The limits a client needs to know, as sent in the welcome frame."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "max_profile_bytes": self.max_profile_bytes,
            "max_channels": self.max_channels,
            "max_members_page": self.max_members_page,
            "outbound_buffer_bytes": self.outbound_buffer_bytes,
        }


@attrs.frozen
class AppConfig:
    """One app (tenant). Per-app settings grow here."""

    name: str


@attrs.frozen
class Config:
    """The whole server configuration."""

    host: str = "127.0.0.1"
    port: int = 8765
    limits: Limits = Limits()
    apps: tuple[AppConfig, ...] = (AppConfig("default"),)
    default_app: str | None = "default"
    """The app a hello without ``app`` connects to; None makes ``app`` mandatory."""

    def app_names(self) -> list[str]:
        return [a.name for a in self.apps]


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a parsed config (the TOML document as a dict)."""
    _no_unknown(raw, "", {"server", "limits", "apps"})
    server = _table(raw, "server")
    _no_unknown(server, "server.", {"host", "port", "default_app"})
    limits = _limits(_table(raw, "limits"))
    apps_raw = raw.get("apps", [{"name": "default"}])
    if not isinstance(apps_raw, list) or not apps_raw:
        raise ConfigError("apps: must be a non-empty array of tables ([[apps]])")
    apps = tuple(_app(a, i) for i, a in enumerate(apps_raw))
    names = [a.name for a in apps]
    if len(set(names)) != len(names):
        raise ConfigError("apps: app names must be unique")
    default_app = server.get("default_app", names[0] if len(names) == 1 else None)
    if default_app is not None and default_app not in names:
        raise ConfigError(f"server.default_app: {default_app!r} is not one of the apps")
    host = server.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError("server.host: must be a non-empty string")
    port = server.get("port", 8765)
    if type(port) is not int or not 0 <= port <= 65535:
        raise ConfigError("server.port: must be an integer from 0 to 65535")
    return Config(host=host, port=port, limits=limits, apps=apps, default_app=default_app)


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table")
    return value


def _no_unknown(table: dict[str, Any], prefix: str, known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _limits(table: dict[str, Any]) -> Limits:
    fields = {a.name: a for a in attrs.fields(Limits)}
    _no_unknown(table, "limits.", set(fields))
    values: dict[str, Any] = {}
    for key, value in table.items():
        if fields[key].type in ("int", int):
            if type(value) is not int or value <= 0:
                raise ConfigError(f"limits.{key}: must be a positive integer")
        elif type(value) not in (int, float) or not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"limits.{key}: must be a positive number of seconds")
        values[key] = value
    return Limits(**values)


def _app(raw: Any, index: int) -> AppConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"apps[{index}]: must be a table")
    _no_unknown(raw, f"apps[{index}].", {"name"})
    name = raw.get("name")
    if not isinstance(name, str) or not APP_NAME.fullmatch(name):
        raise ConfigError(f"apps[{index}].name: must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return AppConfig(name=name)
