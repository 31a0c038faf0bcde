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

import fnmatch
import ipaddress

import attrs

from rtcore.config.hook_settings import HooksConfig, WebhookConfig
from rtcore.core.auth import ApiKey, SessionSettings
from rtcore.core.history import Retention
from rtcore.core.limits.limiter import Rule
from rtcore.protocol.errors import RtcoreError


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
    process's open-files limit (:func:`rtcore.core.limits.admission.connection_cap`)."""
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
    max_history_page: int = 1000
    """Largest page of a ``history`` request (protocol.md §4.11); over it ``bad_request``."""
    max_recovery: int = 5000
    """Most messages a join's recovery replays (protocol.md §4.4.1); a client that missed
    more is told ``recovered: false``, reason ``too_many``. A replay is also refused beyond
    half of ``outbound_buffer_bytes``."""
    max_history_bytes: int = 256 * 1024 * 1024
    """What the memory broker's channel histories hold together, at most (framed messages
    plus a fixed overhead each); beyond it the least recently published streams lose their
    oldest messages first."""
    history_meta_ttl: float = 86_400.0
    """Seconds a channel stream's identity (epoch, last offset) outlives its last publish in
    the memory broker: a client of a quiet channel recovers within it; after it the stream
    starts over with a new epoch."""

    def for_clients(self) -> dict[str, int]:
        """The limits a client needs to know, as sent in the welcome frame."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "max_profile_bytes": self.max_profile_bytes,
            "max_channels": self.max_channels,
            "max_members_page": self.max_members_page,
            "outbound_buffer_bytes": self.outbound_buffer_bytes,
        }


DEFAULT_MEMBER_EVENTS_MAX = 1000
"""A channel rule's ``member_events_max`` when it sets none (and for channels no rule
matches)."""
MAX_MEMBER_EVENTS_MAX = 100_000
"""The largest ``member_events_max`` a rule may set."""

CHANNEL_RULE_KEYS = (
    "pattern",
    "join",
    "send",
    "presence",
    "presence_events",
    "history_size",
    "history_ttl",
    "history",
    "user_limited",
    "member_events_max",
)
"""The keys of a ``[[apps.channels]]`` table (the fields of :class:`ChannelRule`)."""


@attrs.frozen
class ChannelRule:
    """Who may join, send to and see the presence of the channels whose name matches
    ``pattern`` (a glob)."""

    pattern: str
    join: str = "anyone"
    """``anyone``, ``signed_in`` (a valid session token), ``nobody``, ``granted`` (the
    session token's grants allow it), ``token`` (a channel token allows it) or ``hook``
    (the app's ``join_url`` decides; docs/hooks.md): rtcore.core.permissions.decide."""
    send: str = "anyone"
    """As ``join``; ``hook``: the app's ``publish_url`` decides (and may rewrite the data)."""
    presence: str | None = None
    """Who may list the members (``members`` request) and receive member_join, member_leave
    and member_update (a value as for ``join``); None: as ``join``. The server API lists
    members regardless (the app's backend is trusted)."""
    presence_events: bool = True
    """Whether the members who may see presence receive join, leave and update events at
    all. Each event goes to every such member, so N joins cost O(N²) frames without
    presence diffs (protocol.md §5.2) and O(N) frames per flush window with them; turn it
    off for very large channels (live events): listings (``presence``) still work."""
    history_size: int = 0
    """Keep the last ``history_size`` messages of each matching channel (0: no history).
    Its messages then carry an offset and epoch, and clients can recover what they missed
    over a reconnect and page through it (protocol.md §4.4.1, §4.11)."""
    history_ttl: float = 300.0
    """Seconds each message stays in the history."""
    history: str | None = None
    """Who may read the history (``history`` requests and recovery), a value as for
    ``join``; None: as ``join``. The server API reads it regardless."""
    user_limited: bool = False
    """Only the users listed after the channel name's last ``#`` (comma-separated) may
    join, send, list members and read history (``dm#alice,bob``)."""
    member_events_max: int = 1000
    """Past this many members, the channel's connections without presence diffs get no
    more ``member_*`` frames for it: one ``presence_paused`` push, then a
    ``presence_resumed`` once it is back to half of it (protocol.md §5.2.2). Each such
    event goes to every member, so without this cap N joins cost O(N²) frames."""

    def value(self, op: str) -> str:
        """The rule's value for ``op`` (``join``, ``send``, ``presence``, ``history``)."""
        if op == "join":
            return self.join
        if op == "send":
            return self.send
        return self.presence_policy if op == "presence" else self.history_policy

    @property
    def history_policy(self) -> str:
        return self.join if self.history is None else self.history

    @property
    def presence_policy(self) -> str:
        return self.join if self.presence is None else self.presence

    def matches(self, channel: str) -> bool:
        return fnmatch.fnmatchcase(channel, self.pattern)


RULE_CACHE = 4096
"""Channels whose rule an app remembers (a bounded memo: any number of channel names)."""


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
    presence_rate: float = 10.0
    """Presence operations -- joins and profile updates -- one connection may make per
    second (a token bucket per connection, refusing with ``rate_limited``, limiter
    ``presence``; protocol.md §4.1); 0: no presence limit. A leave is never refused: each
    follows a join that was charged."""
    presence_burst: int = 128
    """...with this burst: a reconnecting client (a new connection, a full bucket) rejoins
    this many channels at once, so keep it at least ``limits.max_channels``."""
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
    hooks: HooksConfig | None = None
    """The backend asked at hello, join and send (``[apps.hooks]``, docs/hooks.md)."""
    webhooks: tuple[WebhookConfig, ...] = ()
    """The endpoints told of channel, member and connection events (``[[apps.webhooks]]``)."""

    _rule_of: dict[str, ChannelRule | None] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )
    """``channel`` -> its rule, as :meth:`channel_rule` found it (a join asks four or five
    times); cleared when it holds :data:`RULE_CACHE` channels."""

    def channel_rule(self, channel: str) -> ChannelRule | None:
        """The first rule whose pattern matches ``channel`` (None: none does)."""
        cache = self._rule_of
        try:
            return cache[channel]
        except KeyError:
            pass
        rule = next((r for r in self.channels if r.matches(channel)), None)
        if len(cache) >= RULE_CACHE:
            cache.clear()
        cache[channel] = rule
        return rule

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

    def permission(self, channel: str, op: str) -> tuple[str, bool]:
        """The rule value deciding ``op`` in ``channel`` and whether the channel is
        user-limited; with no matching rule, ``allow_client_join`` (join, presence),
        ``allow_client_send`` is checked apart (send: anyone) and history is nobody's."""
        rule = self.channel_rule(channel)
        if rule is not None:
            return rule.value(op), rule.user_limited
        if op == "history":
            return "nobody", False
        if op == "send":
            return "anyone", False
        return ("anyone" if self.allow_client_join else "nobody"), False

    def history_retention(self, channel: str) -> Retention | None:
        """How much history ``channel`` keeps (None: none): its rule's ``history_size`` and
        ``history_ttl``."""
        rule = self.channel_rule(channel)
        if rule is None or rule.history_size == 0:
            return None
        return Retention(rule.history_size, rule.history_ttl)

    def history_policy(self, channel: str) -> str:
        """Who may read ``channel``'s history: its rule's ``history``, else its ``join``."""
        rule = self.channel_rule(channel)
        return "nobody" if rule is None else rule.history_policy

    def presence_events(self, channel: str) -> bool:
        """Whether ``channel``'s members get presence events: its rule's ``presence_events``,
        else true."""
        rule = self.channel_rule(channel)
        return True if rule is None else rule.presence_events

    def member_events_max(self, channel: str) -> int:
        """Past how many members ``channel``'s ``member_*`` events pause (protocol.md
        §5.2.2): its rule's ``member_events_max``, else the default."""
        rule = self.channel_rule(channel)
        return DEFAULT_MEMBER_EVENTS_MAX if rule is None else rule.member_events_max


@attrs.frozen
class BrokerConfig:
    """How nodes reach each other (docs/scaling.md): ``memory`` is one process, ``redis``
    any number of processes and machines sharing one Redis (or Redis Cluster)."""

    kind: str = "memory"
    """``memory`` (the default: no external service) or ``redis``."""
    url: str = attrs.field(default="redis://127.0.0.1:6379/0", repr=False)
    """The Redis server (``redis://``, ``rediss://`` for TLS); with ``cluster``, any node of
    the cluster. A password in it may come from ``url_env`` or ``url_file`` instead."""
    cluster: bool = False
    """Speak to a Redis Cluster (sharded pub/sub, keys hash-tagged per channel)."""
    prefix: str = "rtcore"
    """Prefix of every key and pub/sub channel: several deployments may share a Redis."""
    connect_timeout: float = 5.0
    """Seconds to connect to Redis before the attempt counts as failed (then: backoff)."""
    command_timeout: float = 2.0
    """Seconds a request that needs Redis's answer (a cluster-wide member listing, a join)
    waits before it is answered ``broker_unavailable`` (protocol.md §4.4)."""
    presence_ttl: float = 20.0
    """Seconds after its last presence refresh that a node's members count as gone: the
    members of a node that died without cleaning up leave (with ``member_leave`` events to
    the survivors) within ``presence_ttl + presence_refresh``."""
    presence_refresh: float = 5.0
    """Seconds between a node's presence refreshes (one pipelined write per local channel)."""
    max_queued: int = 100_000
    """Publications and presence writes waiting for Redis; beyond it (Redis slow or away)
    the node delivers locally only and counts what it could not forward
    (``rtcore_broker_dropped_total``)."""


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
    broker: BrokerConfig = BrokerConfig()
    """How this node reaches the others (``[broker]``)."""

    def app_names(self) -> list[str]:
        return [a.name for a in self.apps]

    def hosts(self) -> tuple[str, ...]:
        return (self.host,) if isinstance(self.host, str) else self.host
