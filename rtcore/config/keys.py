"""The keys each table of the config file may have (an unknown key is an error, with
check-config's message), and the apps' boolean keys with their defaults."""

from __future__ import annotations

ROOT_KEYS = frozenset({"server", "limits", "apps", "broker"})
SERVER_KEYS = frozenset(
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
    }
)
APP_FLAGS = (
    ("enabled", True),
    ("allow_client_join", True),
    ("allow_client_send", True),
    ("allow_client_broadcast", True),
    ("session_required", False),
    ("end_sessions_on_password_change", False),
    ("profile_updates_member", False),
)
"""An app's boolean keys and their defaults."""
APP_KEYS = frozenset(
    {
        "name",
        "api_keys",
        "api_key_required",
        "session",
        "channels",
        "rate_limits",
        "refusals_before_disconnect",
        "presence_rate",
        "presence_burst",
        "max_connections",
        "server_secret",
        "server_secret_env",
        "server_secret_file",
        "revocation_ttl",
        "hooks",
        "webhooks",
        *(k for k, _ in APP_FLAGS),
    }
)
API_KEY_KEYS = frozenset(
    {"key", "key_env", "key_file", "expires", "name", "allowed_origins", "allowed_ips", "realtime"}
)
SESSION_KEYS = frozenset(
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
        "subscribe_claim",
        "channels_claim",
        "expire_connections",
    }
)
