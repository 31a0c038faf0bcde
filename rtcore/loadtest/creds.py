"""What the load test's hellos carry (protocol.md §3.4): the app, its API key, and session
tokens, minted from the app's secret as ``rtcore token`` does or printed by a command.

Secrets come from the environment (``--key-env``, ``--token-secret-env``), never from the
command line where ``ps`` shows them; ``--key`` is there for development keys.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from rtcore.core import auth

MAX_TOKEN_COMMANDS = 1000
"""``--token-command`` runs once per user: at most this many users."""
COMMAND_TIMEOUT = 10.0


class CredentialsError(Exception):
    """The load test cannot build its credentials: the message says which option to fix."""


def hello_fields(
    app: str | None, key: str | None, key_env: str | None, diffs: bool
) -> dict[str, Any]:
    """The hello fields every connection sends (echo off: senders never count their own)."""
    fields: dict[str, Any] = {"echo": False}
    if app:
        fields["app"] = app
    if key_env:
        key = _env(key_env, "--key-env")
    if key:
        fields["key"] = key
    if diffs:
        fields["features"] = ["presence_diffs"]
    return fields


def _env(name: str, option: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise CredentialsError(f"{option} {name}: the environment variable is not set")
    return value


def user_names(users: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(users)]


def minted_tokens(
    secret_env: str,
    users: list[str],
    ttl: float,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
) -> tuple[str, ...]:
    """One token per user, signed with the app's secret (an HS* algorithm), as ``rtcore
    token`` mints them (``rtcore.core.auth.mint_token``)."""
    if not algorithm.startswith("HS"):
        raise CredentialsError(
            f"--token-algorithm {algorithm}: only HS* tokens are minted from a secret; "
            "use --token-command for RS*/ES* apps"
        )
    settings = auth.SessionSettings(
        algorithms=(algorithm,),
        key=_env(secret_env, "--token-secret-env"),
        issuer=issuer,
        audience=audience,
    )
    now = time.time()
    return tuple(auth.mint_token(settings, user, now, ttl) for user in users)


def command_tokens(command: str, users: list[str]) -> tuple[str, ...]:
    """One token per user, each the first line a shell ``command`` prints with the user's
    id in ``$RTCORE_LOADTEST_USER``."""
    if len(users) > MAX_TOKEN_COMMANDS:
        raise CredentialsError(
            f"--token-command runs once per user: {len(users)} users is over "
            f"{MAX_TOKEN_COMMANDS}; use --users to share tokens between connections"
        )
    return tuple(_one_command_token(command, user) for user in users)


def _one_command_token(command: str, user: str) -> str:
    env = {**os.environ, "RTCORE_LOADTEST_USER": user}
    try:
        out = subprocess.run(
            command, shell=True, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise CredentialsError(f"--token-command ran over {COMMAND_TIMEOUT:g} s") from exc
    token = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if out.returncode != 0 or not token:
        raise CredentialsError(
            f"--token-command exited {out.returncode} with no token for user {user!r}: "
            f"{out.stderr.strip()[:200]}"
        )
    return token
