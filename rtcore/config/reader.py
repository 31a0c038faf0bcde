"""Reading a config file: every key checked against its rule, every error found in one run.

:class:`Reader` turns the parsed TOML document into the frozen settings of rtcore.config.
Each independent rule is checked through :meth:`Reader.attempt`, which records a broken rule
and goes on with a stand-in value, so one ``rtcore check-config`` run lists every error, each
naming the key and the rule it breaks.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from rtcore.config import hook_reader
from rtcore.config.checks import (
    IPNetwork,
    boolean,
    channel_rule,
    get_array,
    get_table,
    key_restrictions,
    known_keys,
    limiter_burst,
    needs_session,
    network,
    positive_int,
    positive_number,
    presence_rate,
    rate_rule,
    seconds,
    strings,
)
from rtcore.config.hook_settings import HooksConfig, WebhookConfig
from rtcore.config.keys import (
    API_KEY_KEYS,
    APP_FLAGS,
    APP_KEYS,
    ROOT_KEYS,
    SERVER_KEYS,
    SESSION_KEYS,
)
from rtcore.config.model import (
    AppConfig,
    BrokerConfig,
    ChannelRule,
    Config,
    ConfigError,
    Limits,
)
from rtcore.core.auth import ApiKey, SessionSettings
from rtcore.core.limits.limiter import Rule

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
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
        self.attempt(lambda: known_keys(raw, "", ROOT_KEYS), None)
        no_table: dict[str, Any] = {}
        server = self.attempt(lambda: get_table(raw, "server", "server"), no_table)
        self.attempt(lambda: known_keys(server, "server.", SERVER_KEYS), None)
        listen = self.listen(server)
        admin_secret = self.attempt(
            lambda: self.long_secret(server, "server", "admin_secret"), None
        )
        limits = self.attempt(lambda: self.limits(get_table(raw, "limits", "limits")), Limits())
        broker = self.attempt(
            lambda: self.broker(get_table(raw, "broker", "broker")), BrokerConfig()
        )
        apps = tuple(self.apps(raw.get("apps", [{"name": "default"}])))
        names = [a.name for a in apps]
        default_app = server.get("default_app", names[0] if len(names) == 1 else None)
        if default_app is not None and default_app not in names and apps:
            self.errors.append(f"server.default_app: {default_app!r} is not one of the apps")
        origins, proxies = self.origins(server)
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

    def origins(self, server: dict[str, Any]) -> tuple[list[str], list[IPNetwork]]:
        """``server.allowed_origins`` and ``server.trusted_proxies`` (networks)."""
        no_strings: list[str] = []
        origins = self.attempt(
            lambda: strings(server.get("allowed_origins", []), "server.allowed_origins"),
            no_strings,
        )
        proxies = self.each(
            self.attempt(
                lambda: strings(server.get("trusted_proxies", []), "server.trusted_proxies"),
                no_strings,
            ),
            network,
            "server.trusted_proxies",
        )
        return origins, proxies

    def apps(self, raw: object) -> list[AppConfig]:
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
        self.attempt(lambda: known_keys(table, "limits.", set(fields)), None)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in fields:
                continue
            integral = fields[key].type in ("int", int, "int | None")
            check = positive_int if integral else positive_number
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
        self.attempt(lambda: known_keys(table, "broker.", fields | {"url_env", "url_file"}), None)
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
                lambda: boolean(table["cluster"], "broker.cluster"), False
            )
        prefix = table.get("prefix", "rtcore")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            self.errors.append("broker.prefix: must be a non-empty string without { or }")
        else:
            values["prefix"] = prefix
        values.update(self.broker_numbers(table))
        conf = BrokerConfig(**values)
        if conf.presence_refresh >= conf.presence_ttl:
            self.errors.append(
                "broker.presence_refresh: must be less than broker.presence_ttl "
                f"({conf.presence_refresh} >= {conf.presence_ttl})"
            )
        return conf

    def broker_numbers(self, table: dict[str, Any]) -> dict[str, float]:
        """``[broker]``'s timeouts and ``max_queued``: those given and valid."""
        values: dict[str, float] = {}
        for key in ("connect_timeout", "command_timeout", "presence_ttl", "presence_refresh"):
            if key in table:
                try:
                    values[key] = positive_number(table[key], f"broker.{key}")
                except ConfigError as exc:
                    self.errors.extend(exc.errors)
        if "max_queued" in table:
            try:
                values["max_queued"] = positive_int(table["max_queued"], "broker.max_queued")
            except ConfigError as exc:
                self.errors.extend(exc.errors)
        return values

    def app(self, raw: object, where: str) -> AppConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        get = self.attempt
        get(lambda: known_keys(raw, f"{where}.", APP_KEYS), None)
        name = raw.get("name")
        if not isinstance(name, str) or not APP_NAME.fullmatch(name):
            self.errors.append(f"{where}.name: must be 1-64 characters of A-Z a-z 0-9 _ . -")
            name = where
        flags = {
            k: get(functools.partial(boolean, raw.get(k, d), f"{where}.{k}"), d)
            for k, d in APP_FLAGS
        }
        keys, required = self.app_keys(raw, where)
        hooked = isinstance(raw.get("hooks"), dict) and "connect_url" in raw["hooks"]
        session = self.app_session(raw, flags["session_required"], hooked, where)
        channels, limits = self.rules(raw, "session" in raw, hooked, where)
        hooks, webhooks = self.integrations(raw, channels, where)
        return AppConfig(
            name=name,
            api_keys=tuple(keys),
            api_key_required=required,
            session=session,
            channels=channels,
            rate_limits=tuple(limits),
            refusals_before_disconnect=self.number(
                raw, "refusals_before_disconnect", 100, positive_int, where
            ),
            presence_rate=self.number(raw, "presence_rate", 10.0, presence_rate, where),
            presence_burst=self.number(raw, "presence_burst", 128, limiter_burst, where),
            max_connections=self.number(raw, "max_connections", 100_000, positive_int, where),
            server_secret=get(lambda: self.server_secret(raw, where), None),
            revocation_ttl=self.number(raw, "revocation_ttl", 86_400.0, positive_number, where),
            hooks=hooks,
            webhooks=webhooks,
            **flags,
        )

    def app_session(
        self, raw: dict[str, Any], required: bool, hooked: bool, where: str
    ) -> SessionSettings | None:
        """An app's ``[apps.session]``; ``session_required`` needs it, or a connect hook
        (``hooked``: its user counts as signed in)."""
        if "session" in raw:
            return self.attempt(lambda: self.session(raw["session"], f"{where}.session"), None)
        if required and not hooked:
            self.errors.append(
                f"{where}.session_required: true, but there is no {where}.session "
                f"(nor a {where}.hooks.connect_url)"
            )
        return None

    def rules(
        self, raw: dict[str, Any], has_session: bool, hooked: bool, where: str
    ) -> tuple[tuple[ChannelRule, ...], list[Rule]]:
        """An app's channel rules and rate limiters (``hooked``: a connect hook gives users
        and grants)."""
        channels = tuple(self.list_of(raw, "channels", channel_rule, where))
        if not has_session:
            self.errors.extend(needs_session(channels, f"{where}.channels", hooked))
        limits = self.list_of(raw, "rate_limits", rate_rule, where)
        if len({r.name for r in limits}) != len(limits):
            self.errors.append(f"{where}.rate_limits: limiter names must be unique")
        return channels, limits

    def integrations(
        self, raw: dict[str, Any], channels: tuple[ChannelRule, ...], where: str
    ) -> tuple[HooksConfig | None, tuple[WebhookConfig, ...]]:
        """An app's ``[apps.hooks]`` and ``[[apps.webhooks]]`` (rtcore.config.hook_reader)."""
        hooks = None
        if "hooks" in raw:
            hooks = self.attempt(
                lambda: hook_reader.hooks(self, raw["hooks"], f"{where}.hooks"), None
            )
        self.errors += hook_reader.hooked_rules(channels, hooks, "hooks" in raw, where)
        read = functools.partial(hook_reader.webhook, self)
        webhooks = self.list_of(raw, "webhooks", read, where)
        return hooks, tuple(w for w in webhooks if w is not None)

    def app_keys(self, raw: dict[str, Any], where: str) -> tuple[list[ApiKey], bool]:
        """An app's ``api_keys``, and whether it requires one."""
        known_errors = len(self.errors)
        keys = self.list_of(raw, "api_keys", self.api_key, where)
        keys_broken = len(self.errors) > known_errors
        required = self.attempt(
            lambda: boolean(raw.get("api_key_required", bool(keys)), f"{where}.api_key_required"),
            False,
        )
        if required and not keys and not keys_broken:
            self.errors.append(f"{where}.api_key_required: true, but {where}.api_keys is empty")
        return keys, required

    def list_of(
        self, raw: dict[str, Any], key: str, read: Callable[[Any, str], T], where: str
    ) -> list[T]:
        """The array of tables ``raw[key]``, each read by ``read``."""
        no_items: list[Any] = []
        items = self.attempt(lambda: get_array(raw.get(key, []), f"{where}.{key}"), no_items)
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
                text = (self.base / value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{where}.{key}: cannot read {value!r}: {exc.strerror}") from exc
            # `echo KEY > file` ends it with a line break that is no part of the secret
            return text.removesuffix("\n").removesuffix("\r")
        return value

    def server_secret(self, raw: dict[str, Any], where: str) -> str | None:
        return self.long_secret(raw, where, "server_secret")

    def long_secret(self, raw: dict[str, Any], where: str, name: str) -> str | None:
        """A secret that guards an HTTP interface: at least 32 characters."""
        secret = self.secret(raw, where, name)
        if secret is not None and len(secret) < 32:
            raise ConfigError(f"{where}.{name}: must be at least 32 characters")
        return secret

    def api_key(self, raw: object, where: str) -> ApiKey:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table with key (or key_env) and expires")
        known_keys(raw, f"{where}.", API_KEY_KEYS)
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
        origins, ips = key_restrictions(raw, where)
        return ApiKey(
            key=key,
            expires=expires,
            name=label,
            allowed_origins=origins,
            allowed_ips=ips,
            realtime=boolean(raw.get("realtime", True), f"{where}.realtime"),
        )

    def session(self, raw: object, where: str) -> SessionSettings:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        known_keys(raw, f"{where}.", SESSION_KEYS)
        algorithms = strings(raw.get("algorithms", ["HS256"]), f"{where}.algorithms")
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ConfigError(f"{where}.algorithms: must be some of {', '.join(ALGORITHMS)}")
        families = {a[:2] for a in algorithms}
        if "HS" in families and len(families) > 1:
            raise ConfigError(
                f"{where}.algorithms: do not mix HS* with RS*/ES* "
                "(a public key must never be usable as an HMAC secret)"
            )
        key = self.session_key(raw, where, hmac="HS" in families)
        leeway = seconds(raw.get("leeway", 30), f"{where}.leeway")
        for k in ("issuer", "audience", "session_claim", "subscribe_claim", "channels_claim"):
            if k in raw and not isinstance(raw[k], str):
                raise ConfigError(f"{where}.{k}: must be a string")
        return SessionSettings(
            algorithms=tuple(algorithms),
            key=key,
            leeway=leeway,
            issuer=raw.get("issuer"),
            audience=raw.get("audience"),
            session_claim=raw.get("session_claim", "sid"),
            subscribe_claim=raw.get("subscribe_claim", "subscribe"),
            channels_claim=raw.get("channels_claim", "channels"),
            expire_connections=boolean(
                raw.get("expire_connections", False), f"{where}.expire_connections"
            ),
        )

    def session_key(self, raw: dict[str, Any], where: str, *, hmac: bool) -> str:
        """The HMAC secret (HS*) or the PEM public key (RS*/ES*) that verifies tokens."""
        if hmac:
            key = self.secret(raw, where, "secret")
            if key is None:
                raise ConfigError(
                    f"{where}: HS* algorithms need secret (or secret_env, secret_file)"
                )
            if len(key) < 32:
                raise ConfigError(f"{where}.secret: must be at least 32 characters")
            return key
        key = self.secret(raw, where, "public_key")
        if key is None or "BEGIN PUBLIC KEY" not in key:
            raise ConfigError(
                f"{where}: RS*/ES* algorithms need public_key (PEM), "
                "public_key_env or public_key_file"
            )
        return key
