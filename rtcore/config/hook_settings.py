"""The settings of an app's hooks (``[apps.hooks]``) and webhooks (``[[apps.webhooks]]``):
frozen values, read by :mod:`rtcore.config.hook_reader` (docs/hooks.md has every field)."""

from __future__ import annotations

import fnmatch

import attrs

HOOK_KINDS = ("connect", "join", "publish")
"""The hooks, each asked at ``<kind>_url``."""
WEBHOOK_EVENTS = (
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_message",
    "connection_opened",
    "connection_closed",
)
"""What a webhook may be told of (docs/hooks.md)."""
WEBHOOK_BATCH_MAX = 100
"""Events per webhook request, at most."""


@attrs.frozen
class HooksConfig:
    """Where and how an app's backend is asked (``[apps.hooks]``)."""

    secret: str = attrs.field(repr=False)
    """The HMAC-SHA256 key of ``X-Rtcore-Signature`` (from ``secret_env`` or ``secret_file``)."""
    connect_url: str | None = None
    """Asked at every hello: the backend names the user, or refuses the connection."""
    join_url: str | None = None
    """Asked for joins of channels whose rule says ``join = "hook"``."""
    publish_url: str | None = None
    """Asked for sends to channels whose rule says ``send = "hook"``."""
    timeout: float = 2.0
    """Seconds a hook call may take; then the client is refused ``hook_unavailable``."""
    max_concurrency: int = 64
    """Hook calls of this app in flight at once; the next waits (within its timeout)."""
    breaker_failures: int = 5
    """Failures in a row that open the circuit breaker (calls then fail at once)..."""
    breaker_open: float = 10.0
    """...for this many seconds; then one probe call is let through (half-open)."""
    join_cache_ttl: float = 0.0
    """Seconds a join answer (allow or deny) is remembered per (user, channel); 0: off.
    Only signed-in users' answers are cached."""
    headers: tuple[str, ...] = ()
    """Handshake headers forwarded to connect_url (lower-cased names); cookies always are."""

    def url(self, kind: str) -> str | None:
        return {"connect": self.connect_url, "join": self.join_url, "publish": self.publish_url}[
            kind
        ]


@attrs.frozen
class WebhookConfig:
    """One endpoint told of an app's events (``[[apps.webhooks]]``)."""

    url: str
    secret: str = attrs.field(repr=False)
    events: tuple[str, ...] = WEBHOOK_EVENTS
    channels: tuple[str, ...] = ()
    """Globs of the channels whose client sends are posted as ``client_message``."""
    queue_size: int = 10_000
    """Events waiting for this endpoint, at most; beyond it new ones are dropped (counted
    in ``rtcore_webhook_dropped_total``, logged)."""
    batch_window: float = 0.2
    """Seconds the first queued event waits for others to share its request."""
    max_attempts: int = 6
    """Tries of one batch (the first included) before it is dropped (counted, logged)."""
    retry_base: float = 0.5
    """Backoff before the second try; doubled each try, full jitter, at most ``retry_max``."""
    retry_max: float = 30.0
    timeout: float = 5.0
    """Seconds one delivery may take before it counts as failed."""

    def wants(self, event: str, channel: str | None = None) -> bool:
        if event not in self.events:
            return False
        if event == "client_message":
            return channel is not None and any(
                fnmatch.fnmatchcase(channel, p) for p in self.channels
            )
        return True
