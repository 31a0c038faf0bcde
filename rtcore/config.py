"""Settings: a TOML file, environment variables for secrets, command-line flags.

Everything is validated at load into frozen objects; a bad file fails with a
:class:`ConfigError` naming the key and the rule it breaks — every broken rule of the file at
once, so that one ``rtcore check-config`` run lists them all. Without any file the embedded
defaults serve one app, ``default``, on 127.0.0.1:8765, with no API key.

Secrets need not be in the file: wherever a secret is accepted (``key``, ``secret``), a
``*_env`` variant names an environment variable to read it from (``key_env = "CHAT_KEY"``),
and ``*_file`` a file (``public_key_file``), so the file can be committed without them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from rtcore.auth import ApiKey, SessionSettings
from rtcore.limiter import OPERATIONS, Rule
from rtcore.protocol.errors import RtcoreError

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
POLICIES = ("anyone", "signed_in", "nobody")
ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


T = TypeVar("T")


class ConfigError(RtcoreError):
    """The configuration is invalid; the message names the key and the rule it breaks.

    Attributes:
        errors: every broken rule, one line each (the message is them joined by newlines).
    """

    def __init__(self, *errors: str) -> None:
        super().__init__("\n".join(errors))
        self.errors: tuple[str, ...] = errors


@attrs.frozen
class Limits:
    """Server-wide bounds (protocol.md §4.2). The per-connection ones are sent in welcome."""

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
    max_connections_per_ip: int = 1024
    """Open connections from one IP address; more are closed with 4020."""
    connect_rate_per_ip: float = 50.0
    """New connections per second from one IP (a token bucket)..."""
    connect_burst_per_ip: int = 200
    """...with this burst; beyond it connections are closed with 4029."""
    handshake_timeout: float = 10.0
    """Seconds from TCP accept to a valid hello before closing with 4001."""
    heartbeat_interval: float = 25.0
    """Seconds of silence before the server pings; twice that without a frame closes (4009)."""
    close_timeout: float = 2.0
    """Seconds to wait for the peer's close frame before dropping the TCP connection."""
    shutdown_grace: float = 5.0
    """Seconds that connections get to close cleanly on shutdown."""
    max_api_body_bytes: int = 1024 * 1024
    """Largest server-API request body (HTTP 413 beyond)."""
    max_connections: int | None = None
    """Open client connections server-wide, counted from the TCP accept (before the upgrade);
    beyond it a new connection gets a short HTTP 503 and is closed. None: derived from the
    process's open-files limit (:func:`rtcore.admission.connection_cap`)."""
    api_max_connections: int = 64
    """Open server-API connections; beyond it a new one gets HTTP 503 and is closed."""
    api_idle_timeout: float = 30.0
    """Seconds a server-API connection may wait for its next request before it is closed."""
    inbound_frames_per_second: float = 5000.0
    """WebSocket frames a connection may send per second (a token bucket; every frame counts:
    messages, fragments, pings, pongs)..."""
    inbound_frame_burst: int = 20_000
    """...with this burst; beyond it the connection is closed with 4031."""
    inbound_bytes_per_second: float = 4 * 1024 * 1024
    """Bytes a connection may send per second (a token bucket)..."""
    inbound_byte_burst: int = 16 * 1024 * 1024
    """...with this burst; beyond it the connection is closed with 4031."""

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
class ChannelRule:
    """Who may join, send to and see the presence of the channels whose name matches
    ``pattern`` (a glob)."""

    pattern: str
    join: str = "anyone"
    """``anyone``, ``signed_in`` (a valid session token) or ``nobody``."""
    send: str = "anyone"
    presence: str | None = None
    """Who may list the members (``members`` request) and receive member_join, member_leave
    and member_update: ``anyone``, ``signed_in`` or ``nobody``; None: as ``join``. The
    server API lists members regardless (the app's backend is trusted)."""
    presence_events: bool = True
    """Whether the members who may see presence receive join, leave and update events at
    all. Each event goes to every such member, so N joins cost O(N²) frames without
    presence diffs (protocol.md §5.2) and O(N) frames per flush window with them; turn it
    off for very large channels (live events): listings (``presence``) still work."""

    @property
    def presence_policy(self) -> str:
        return self.join if self.presence is None else self.presence

    def matches(self, channel: str) -> bool:
        return fnmatch.fnmatchcase(channel, self.pattern)


@attrs.frozen
class AppConfig:
    """One app (tenant) and its realtime settings."""

    name: str
    enabled: bool = True
    """False: new connections are closed with 4006, existing ones on reload."""
    api_keys: tuple[ApiKey, ...] = ()
    api_key_required: bool = False
    session_required: bool = False
    """Only signed-in users (a valid session token in the hello) may connect."""
    session: SessionSettings | None = None
    allow_client_join: bool = True
    allow_client_send: bool = True
    allow_client_broadcast: bool = True
    channels: tuple[ChannelRule, ...] = ()
    """Channel rules, first match wins; a channel no rule matches follows allow_client_*."""
    rate_limits: tuple[Rule, ...] = ()
    refusals_before_disconnect: int = 100
    """How many ``rate_limited`` replies in a row a client gets: the next request refused in
    that row closes the connection (4030) instead. An admitted request ends the row."""
    max_connections: int = 100_000
    server_secret: str | None = attrs.field(default=None, repr=False)
    """The backend's credential for the server API (never the client API key)."""
    end_sessions_on_password_change: bool = False
    """A password_change user event also ends every other session of the user."""
    profile_updates_member: bool = False
    """A profile_update user event also replaces the member profile of the user's connections."""
    revocation_ttl: float = 86_400.0
    """How long an ended session stays refused when its token has no (or a later) ``exp``."""

    def channel_rule(self, channel: str) -> ChannelRule | None:
        return next((r for r in self.channels if r.matches(channel)), None)

    def join_policy(self, channel: str) -> str:
        """Who may join ``channel``: its rule's, else per ``allow_client_join``."""
        rule = self.channel_rule(channel)
        if rule is not None:
            return rule.join
        return "anyone" if self.allow_client_join else "nobody"

    def presence_policy(self, channel: str) -> str:
        """Who may list ``channel``'s members and receive its presence events: its rule's
        ``presence``, else whoever may join it."""
        rule = self.channel_rule(channel)
        if rule is not None:
            return rule.presence_policy
        return "anyone" if self.allow_client_join else "nobody"

    def presence_events(self, channel: str) -> bool:
        """Whether ``channel``'s members get presence events: its rule's ``presence_events``,
        else true."""
        rule = self.channel_rule(channel)
        return True if rule is None else rule.presence_events


@attrs.frozen
class Config:
    """The whole server configuration."""

    host: str | tuple[str, ...] = "127.0.0.1"
    """Listen address(es); all on ``port``."""
    port: int = 8765
    limits: Limits = Limits()
    apps: tuple[AppConfig, ...] = (AppConfig("default"),)
    default_app: str | None = "default"
    """The app a hello without ``app`` connects to; None makes ``app`` mandatory."""
    allowed_origins: tuple[str, ...] = ()
    """If set, browser handshakes (with an Origin header) from other origins get HTTP 403."""
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Proxies whose X-Forwarded-For is believed (so per-IP limits see the real clients)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int | None = 8766
    """The server API's HTTP port (docs/api.md); None: no HTTP API."""
    admin_secret: str | None = attrs.field(default=None, repr=False)
    """The operators' credential for the settings page at ``/admin`` on the API port (None:
    the page is off)."""

    def app_names(self) -> list[str]:
        return [a.name for a in self.apps]

    def hosts(self) -> tuple[str, ...]:
        return (self.host,) if isinstance(self.host, str) else self.host


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file (``env``: where ``*_env`` keys look; os.environ)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(raw, env=os.environ if env is None else env, base=Path(path).parent)


def from_dict(
    raw: dict[str, Any], env: Mapping[str, str] | None = None, base: Path | None = None
) -> Config:
    """Validate a parsed config (the TOML document as a dict)."""
    reader = _Reader(os.environ if env is None else env, base or Path("."))
    conf = reader.attempt(lambda: reader.config(raw), None)
    if reader.errors:
        raise ConfigError(*reader.errors)
    assert conf is not None
    return conf


class _Reader:
    """Validates a parsed file. Each independent rule is checked through :meth:`attempt`, which
    records a broken rule and goes on with a stand-in value, so one run finds every error."""

    def __init__(self, env: Mapping[str, str], base: Path) -> None:
        self.env = env
        self.base = base
        self.errors: list[str] = []

    def attempt(self, check: Callable[[], T], instead: T) -> T:
        """``check()``, or — when it breaks a rule — ``instead``, with the error recorded."""
        try:
            return check()
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return instead

    def each(self, items: Iterable[Any], read: Callable[[Any, str], T], where: str) -> list[T]:
        """``read(item, where[i])`` for every item that reads without error."""
        out: list[T] = []
        for i, item in enumerate(items):
            try:
                out.append(read(item, f"{where}[{i}]"))
            except ConfigError as exc:
                self.errors.extend(exc.errors)
        return out

    def config(self, raw: dict[str, Any]) -> Config:
        self.attempt(lambda: _known(raw, "", {"server", "limits", "apps"}), None)
        no_table: dict[str, Any] = {}
        server = self.attempt(lambda: _table(raw, "server", "server"), no_table)
        self.attempt(
            lambda: _known(
                server,
                "server.",
                {
                    "host",
                    "port",
                    "default_app",
                    "allowed_origins",
                    "trusted_proxies",
                    "tls_cert",
                    "tls_key",
                    "api_host",
                    "api_port",
                    "admin_secret",
                    "admin_secret_env",
                    "admin_secret_file",
                },
            ),
            None,
        )
        listen = self.listen(server)
        admin_secret = self.attempt(
            lambda: self.long_secret(server, "server", "admin_secret"), None
        )
        limits = self.attempt(lambda: self.limits(_table(raw, "limits", "limits")), Limits())
        apps = tuple(self.apps(raw.get("apps", [{"name": "default"}])))
        names = [a.name for a in apps]
        default_app = server.get("default_app", names[0] if len(names) == 1 else None)
        if default_app is not None and default_app not in names and apps:
            self.errors.append(f"server.default_app: {default_app!r} is not one of the apps")
        no_strings: list[str] = []
        origins = self.attempt(
            lambda: _strings(server.get("allowed_origins", []), "server.allowed_origins"),
            no_strings,
        )
        proxies = self.each(
            self.attempt(
                lambda: _strings(server.get("trusted_proxies", []), "server.trusted_proxies"),
                no_strings,
            ),
            _network,
            "server.trusted_proxies",
        )
        return Config(
            limits=limits,
            apps=apps,
            default_app=default_app,
            allowed_origins=tuple(origins),
            trusted_proxies=tuple(proxies),
            admin_secret=admin_secret,
            **listen,
        )

    def apps(self, raw: Any) -> list[AppConfig]:
        if not isinstance(raw, list) or not raw:
            self.errors.append("apps: must be a non-empty array of tables ([[apps]])")
            return []
        apps = self.each(raw, self.app, "apps")
        names = [a.name for a in apps]
        if len(set(names)) != len(names):
            self.errors.append("apps: app names must be unique")
        return apps

    def listen(self, server: dict[str, Any]) -> dict[str, Any]:
        """The addresses: client port (with TLS), server-API port."""
        fail = self.errors.append
        host = server.get("host", "127.0.0.1")
        hosts = [host] if isinstance(host, str) else host
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and h for h in hosts)
        ):
            fail("server.host: must be an address or a non-empty list of them")
        port = server.get("port", 8765)
        if type(port) is not int or not 0 <= port <= 65535:
            fail("server.port: must be an integer from 0 to 65535")
        cert, key = server.get("tls_cert"), server.get("tls_key")
        if (cert is None) != (key is None):
            fail("server.tls_cert, server.tls_key: give both or neither")
        for k, v in (("tls_cert", cert), ("tls_key", key)):
            if v is not None and not (self.base / str(v)).is_file():
                fail(f"server.{k}: {v!r} is not a readable file")
        api_host = server.get("api_host", "127.0.0.1")
        if not isinstance(api_host, str) or not api_host:
            fail("server.api_host: must be an address")
        api_port = server.get("api_port", 8766)
        if api_port is False:
            api_port = None
        elif type(api_port) is not int or not 0 <= api_port <= 65535:
            fail("server.api_port: must be an integer from 0 to 65535, or false")
        return {
            "host": host if isinstance(host, str) else tuple(hosts),
            "port": port,
            "tls_cert": str(self.base / cert) if cert else None,
            "tls_key": str(self.base / key) if key else None,
            "api_host": api_host,
            "api_port": api_port,
        }

    def limits(self, table: dict[str, Any]) -> Limits:
        fields = {a.name: a for a in attrs.fields(Limits)}
        self.attempt(lambda: _known(table, "limits.", set(fields)), None)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in fields:
                continue
            integral = fields[key].type in ("int", int, "int | None")
            check = _positive_int if integral else _positive_number
            try:
                check(value, f"limits.{key}")
            except ConfigError as exc:
                self.errors.extend(exc.errors)
            else:
                values[key] = value
        return Limits(**values)

    def app(self, raw: Any, where: str) -> AppConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        get = self.attempt
        get(
            lambda: _known(
                raw,
                f"{where}.",
                {
                    "name",
                    "enabled",
                    "api_keys",
                    "api_key_required",
                    "session_required",
                    "session",
                    "allow_client_join",
                    "allow_client_send",
                    "allow_client_broadcast",
                    "channels",
                    "rate_limits",
                    "refusals_before_disconnect",
                    "max_connections",
                    "server_secret",
                    "server_secret_env",
                    "server_secret_file",
                    "end_sessions_on_password_change",
                    "profile_updates_member",
                    "revocation_ttl",
                },
            ),
            None,
        )
        name = raw.get("name")
        if not isinstance(name, str) or not APP_NAME.fullmatch(name):
            self.errors.append(f"{where}.name: must be 1-64 characters of A-Z a-z 0-9 _ . -")
            name = where
        flags = {
            k: get(functools.partial(_bool, raw.get(k, d), f"{where}.{k}"), d)
            for k, d in (
                ("enabled", True),
                ("allow_client_join", True),
                ("allow_client_send", True),
                ("allow_client_broadcast", True),
                ("session_required", False),
                ("end_sessions_on_password_change", False),
                ("profile_updates_member", False),
            )
        }
        known_errors = len(self.errors)
        keys = self.list_of(raw, "api_keys", self.api_key, where)
        keys_broken = len(self.errors) > known_errors
        required = get(
            lambda: _bool(raw.get("api_key_required", bool(keys)), f"{where}.api_key_required"),
            False,
        )
        if required and not keys and not keys_broken:
            self.errors.append(f"{where}.api_key_required: true, but {where}.api_keys is empty")
        session = None
        if "session" in raw:
            session = get(lambda: self.session(raw["session"], f"{where}.session"), None)
        elif flags["session_required"]:
            self.errors.append(f"{where}.session_required: true, but there is no {where}.session")
        limits = self.list_of(raw, "rate_limits", self.rule, where)
        if len({r.name for r in limits}) != len(limits):
            self.errors.append(f"{where}.rate_limits: limiter names must be unique")
        return AppConfig(
            name=name,
            api_keys=tuple(keys),
            api_key_required=required,
            session=session,
            channels=tuple(self.list_of(raw, "channels", self.channel_rule, where)),
            rate_limits=tuple(limits),
            refusals_before_disconnect=self.number(
                raw, "refusals_before_disconnect", 100, _positive_int, where
            ),
            max_connections=self.number(raw, "max_connections", 100_000, _positive_int, where),
            server_secret=get(lambda: self.server_secret(raw, where), None),
            revocation_ttl=self.number(raw, "revocation_ttl", 86_400.0, _positive_number, where),
            **flags,
        )

    def list_of(
        self, raw: dict[str, Any], key: str, read: Callable[[Any, str], T], where: str
    ) -> list[T]:
        """The array of tables ``raw[key]``, each read by ``read``."""
        no_items: list[Any] = []
        items = self.attempt(lambda: _array(raw.get(key, []), f"{where}.{key}"), no_items)
        return self.each(items, read, f"{where}.{key}")

    def number(
        self,
        raw: dict[str, Any],
        key: str,
        default: T,
        check: Callable[[Any, str], Any],
        where: str,
    ) -> T:
        """``raw[key]`` (or ``default``) if ``check`` accepts it."""
        value = raw.get(key, default)
        return self.attempt(lambda: check(value, f"{where}.{key}"), default)

    def secret(self, raw: dict[str, Any], where: str, name: str) -> str | None:
        """``name``, ``name_env`` (an environment variable) or ``name_file``: at most one."""
        given = [k for k in (name, f"{name}_env", f"{name}_file") if k in raw]
        if len(given) > 1:
            raise ConfigError(f"{where}: give only one of {', '.join(given)}")
        if not given:
            return None
        key = given[0]
        value = raw[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: must be a non-empty string")
        if key.endswith("_env"):
            if value not in self.env:
                raise ConfigError(f"{where}.{key}: environment variable {value} is not set")
            return self.env[value]
        if key.endswith("_file"):
            try:
                return (self.base / value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{where}.{key}: cannot read {value!r}: {exc.strerror}") from exc
        return value

    def server_secret(self, raw: dict[str, Any], where: str) -> str | None:
        return self.long_secret(raw, where, "server_secret")

    def long_secret(self, raw: dict[str, Any], where: str, name: str) -> str | None:
        """A secret that guards an HTTP interface: at least 32 characters."""
        secret = self.secret(raw, where, name)
        if secret is not None and len(secret) < 32:
            raise ConfigError(f"{where}.{name}: must be at least 32 characters")
        return secret

    def api_key(self, raw: Any, where: str) -> ApiKey:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table with key (or key_env) and expires")
        _known(raw, f"{where}.", {"key", "key_env", "key_file", "expires", "name"})
        key = self.secret(raw, where, "key")
        if key is None:
            raise ConfigError(f"{where}: needs key, key_env or key_file")
        expires = raw.get("expires")
        if expires is not None:
            if not isinstance(expires, dt.datetime) or expires.tzinfo is None:
                raise ConfigError(
                    f"{where}.expires: must be a TOML date-time with a time zone "
                    "(e.g. 2027-01-31T00:00:00Z)"
                )
            expires = expires.timestamp()
        label = raw.get("name", "")
        if not isinstance(label, str):
            raise ConfigError(f"{where}.name: must be a string")
        return ApiKey(key=key, expires=expires, name=label)

    def session(self, raw: Any, where: str) -> SessionSettings:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _known(
            raw,
            f"{where}.",
            {
                "algorithms",
                "secret",
                "secret_env",
                "secret_file",
                "public_key",
                "public_key_env",
                "public_key_file",
                "leeway",
                "issuer",
                "audience",
                "session_claim",
                "expire_connections",
            },
        )
        algorithms = _strings(raw.get("algorithms", ["HS256"]), f"{where}.algorithms")
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ConfigError(f"{where}.algorithms: must be some of {', '.join(ALGORITHMS)}")
        families = {a[:2] for a in algorithms}
        if "HS" in families and len(families) > 1:
            raise ConfigError(
                f"{where}.algorithms: do not mix HS* with RS*/ES* "
                "(a public key must never be usable as an HMAC secret)"
            )
        if "HS" in families:
            key = self.secret(raw, where, "secret")
            if key is None:
                raise ConfigError(
                    f"{where}: HS* algorithms need secret (or secret_env, secret_file)"
                )
            if len(key) < 32:
                raise ConfigError(f"{where}.secret: must be at least 32 characters")
        else:
            key = self.secret(raw, where, "public_key")
            if key is None or "BEGIN PUBLIC KEY" not in key:
                raise ConfigError(
                    f"{where}: RS*/ES* algorithms need public_key (PEM), "
                    "public_key_env or public_key_file"
                )
        leeway = raw.get("leeway", 30)
        if type(leeway) not in (int, float) or not 0 <= leeway < math.inf:
            raise ConfigError(f"{where}.leeway: must be a number of seconds >= 0")
        for k in ("issuer", "audience", "session_claim"):
            if k in raw and not isinstance(raw[k], str):
                raise ConfigError(f"{where}.{k}: must be a string")
        return SessionSettings(
            algorithms=tuple(algorithms),
            key=key,
            leeway=float(leeway),
            issuer=raw.get("issuer"),
            audience=raw.get("audience"),
            session_claim=raw.get("session_claim", "sid"),
            expire_connections=_bool(
                raw.get("expire_connections", False), f"{where}.expire_connections"
            ),
        )

    def channel_rule(self, raw: Any, where: str) -> ChannelRule:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _known(raw, f"{where}.", {"pattern", "join", "send", "presence", "presence_events"})
        pattern = raw.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f'{where}.pattern: must be a glob such as "public-*"')
        for k in ("join", "send", "presence"):
            if raw.get(k, "anyone") not in POLICIES:
                raise ConfigError(f"{where}.{k}: must be one of {', '.join(POLICIES)}")
        return ChannelRule(
            pattern,
            raw.get("join", "anyone"),
            raw.get("send", "anyone"),
            raw.get("presence"),
            _bool(raw.get("presence_events", True), f"{where}.presence_events"),
        )

    def rule(self, raw: Any, where: str) -> Rule:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _known(
            raw,
            f"{where}.",
            {"name", "rate", "per_seconds", "burst", "error_message", "scope", "operations"},
        )
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: must be a non-empty string")
        rate = _positive_number(raw.get("rate"), f"{where}.rate")
        per = _positive_number(raw.get("per_seconds", 1), f"{where}.per_seconds")
        burst = raw.get("burst")
        if burst is not None:
            _positive_number(burst, f"{where}.burst")
            if burst < 1:
                raise ConfigError(f"{where}.burst: must be at least 1")
        elif rate < 1:
            raise ConfigError(f"{where}.burst: needed when rate < 1 (the bucket must hold a token)")
        message = raw.get("error_message", "rate limit exceeded")
        if not isinstance(message, str):
            raise ConfigError(f"{where}.error_message: must be a string")
        scope = raw.get("scope", "client")
        if scope not in ("client", "connection"):
            raise ConfigError(f"{where}.scope: must be client or connection")
        ops = _strings(raw.get("operations", sorted(OPERATIONS)), f"{where}.operations")
        if not ops or not set(ops) <= OPERATIONS:
            raise ConfigError(
                f"{where}.operations: must be some of {', '.join(sorted(OPERATIONS))}"
            )
        return Rule(
            name,
            float(rate),
            float(per),
            None if burst is None else float(burst),
            message,
            scope,
            frozenset(ops),
        )


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be an array")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be an array of strings")
    return value


def _known(table: dict[str, Any], prefix: str, known: set[str]) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        listed = ", ".join(sorted(known))
        raise ConfigError(*(f"{prefix}{key}: unknown key (known: {listed})" for key in unknown))


def _network(value: str, where: str) -> Any:
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        raise ConfigError(
            f"{where.rsplit('[', 1)[0]}: {value!r} is not an address or network (CIDR)"
        ) from None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def _positive_int(value: Any, where: str) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{where}: must be a positive integer")
    return value


def _positive_number(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{where}: must be a positive number")
    return float(value)
