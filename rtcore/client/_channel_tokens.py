"""Channel tokens on the client's side (protocol.md §4.4.2): the application's provider, asked
on every join and rejoin and before a held token expires; and when to ask.

The client cannot verify a token (it has no key); it reads the token's ``exp`` only to know
when to refresh it. Expiry is the server's, so the time is the server's too: the welcome's
``time`` plus what the client's monotonic clock has counted since, which is immune to a
client wall clock that is wrong. A token is refreshed when four fifths of what is left of it
have passed (at most 30 s before its ``exp``).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Awaitable, Callable

import anyio

ChannelTokenProvider = Callable[[str], "str | None | Awaitable[str | None]"]
"""Channel name -> a channel token for it (None: join without one); sync or async."""
REFRESH_MARGIN = 30.0
"""Seconds before a token's ``exp`` that it is refreshed, at most."""


class ChannelTokens:
    """The provider, the server's clock, and the pending refresh per channel."""

    __slots__ = ("provider", "scopes", "_wall", "_mono")

    def __init__(self, provider: ChannelTokenProvider | None) -> None:
        self.provider = provider
        self.scopes: dict[str, anyio.CancelScope] = {}
        """The waiting refresh of each channel that holds a token."""
        self._wall = 0.0
        self._mono = 0.0

    async def get(self, channel: str) -> str | None:
        """Ask the provider for ``channel``'s token (None without a provider)."""
        if self.provider is None:
            return None
        token = self.provider(channel)
        if inspect.isawaitable(token):
            token = await token
        if token is not None and not isinstance(token, str):
            raise TypeError(f"channel_token({channel!r}) returned {type(token).__name__}, not str")
        return token

    def synced(self, server_time_ms: int) -> None:
        """A welcome said the server's time: count from it."""
        self._wall, self._mono = server_time_ms / 1000, anyio.current_time()

    def refresh_delay(self, token: str) -> float | None:
        """Seconds until ``token`` should be refreshed (None: it has no readable ``exp``)."""
        exp = expiry(token)
        if exp is None:
            return None
        left = exp - (self._wall + anyio.current_time() - self._mono)
        return max(0.0, left - min(REFRESH_MARGIN, left / 5))

    def cancel(self, channel: str) -> None:
        scope = self.scopes.pop(channel, None)
        if scope is not None:
            scope.cancel()


def expiry(token: str) -> float | None:
    """A JWT's ``exp`` as the token says (unverified), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
