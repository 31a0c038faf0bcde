"""Reading a config file: every key checked against its rule, every error found in one run.

:class:`Reader` turns the parsed TOML document into the frozen settings of rtcore.config.
Each independent rule is checked through :meth:`Reader.attempt`, which records a broken rule
and goes on with a stand-in value, so one ``rtcore check-config`` run lists every error, each
naming the key and the rule it breaks.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from rtcore.config.model import (
    CHANNEL_RULE_KEYS,
    AppConfig,
    BrokerConfig,
    ChannelRule,
    Config,
    ConfigError,
    Limits,
)
from rtcore.core.auth import ApiKey, SessionSettings
from rtcore.core.limits.limiter import LIMITER_KEYS, OPERATIONS, SCOPES, Rule

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
POLICIES = ("anyone", "signed_in", "nobody")
MAX_HISTORY_SIZE = 1_000_000
"""Largest ``history_size`` of a channel rule."""
ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")

T = TypeVar("T")


class Reader:
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
        self.attempt(lambda: _known(raw, "", {"server", "limits", "apps", "broker"}), None)
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
        broker = self.attempt(lambda: self.broker(_table(raw, "broker", "broker")), BrokerConfig())
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
            broker=broker,
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

    def broker(self, table: dict[str, Any]) -> BrokerConfig:
        """``[broker]``: kind, url (or url_env / url_file), cluster, prefix, timeouts."""
        fields = {a.name for a in attrs.fields(BrokerConfig)}
        self.attempt(lambda: _known(table, "broker.", fields | {"url_env", "url_file"}), None)
        values: dict[str, Any] = {}
        kind = table.get("kind", "memory")
        if kind not in ("memory", "redis"):
            self.errors.append(f"broker.kind: must be 'memory' or 'redis', not {kind!r}")
        else:
            values["kind"] = kind
        url = self.attempt(lambda: self.secret(table, "broker", "url"), None)
        if url is not None:
            url = url.strip()
            if not url.startswith(("redis://", "rediss://", "unix://")):
                self.errors.append("broker.url: must start with redis://, rediss:// or unix://")
            else:
                values["url"] = url
        if "cluster" in table:
            values["cluster"] = self.attempt(
                lambda: _bool(table["cluster"], "broker.cluster"), False
            )
        prefix = table.get("prefix", "rtcore")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            self.errors.append("broker.prefix: must be a non-empty string without { or }")
        else:
            values["prefix"] = prefix
        for key in ("connect_timeout", "command_timeout", "presence_ttl", "presence_refresh"):
            if key in table:
                try:
                    values[key] = _positive_number(table[key], f"broker.{key}")
                except ConfigError as exc:
                    self.errors.extend(exc.errors)
        if "max_queued" in table:
            try:
                values["max_queued"] = _positive_int(table["max_queued"], "broker.max_queued")
            except ConfigError as exc:
                self.errors.extend(exc.errors)
        conf = BrokerConfig(**values)
        if conf.presence_refresh >= conf.presence_ttl:
            self.errors.append(
                "broker.presence_refresh: must be less than broker.presence_ttl "
                f"({conf.presence_refresh} >= {conf.presence_ttl})"
            )
        return conf

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
        _known(raw, f"{where}.", set(CHANNEL_RULE_KEYS))
        pattern = raw.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f'{where}.pattern: must be a glob such as "public-*"')
        for k in ("join", "send", "presence", "history"):
            if raw.get(k, "anyone") not in POLICIES:
                raise ConfigError(f"{where}.{k}: must be one of {', '.join(POLICIES)}")
        size = raw.get("history_size", 0)
        if type(size) is not int or not 0 <= size <= MAX_HISTORY_SIZE:
            raise ConfigError(
                f"{where}.history_size: must be an integer from 0 (no history) "
                f"to {MAX_HISTORY_SIZE}"
            )
        ttl = raw.get("history_ttl", 300.0)
        if "history_ttl" in raw:
            _positive_number(ttl, f"{where}.history_ttl")
            if size == 0:
                raise ConfigError(f"{where}.history_ttl: set, but history_size is 0 (no history)")
        return ChannelRule(
            pattern,
            raw.get("join", "anyone"),
            raw.get("send", "anyone"),
            raw.get("presence"),
            _bool(raw.get("presence_events", True), f"{where}.presence_events"),
            size,
            float(ttl),
            raw.get("history"),
        )

    def rule(self, raw: Any, where: str) -> Rule:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _known(raw, f"{where}.", set(LIMITER_KEYS))
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
        if scope not in SCOPES:
            raise ConfigError(f"{where}.scope: must be {' or '.join(SCOPES)}")
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
