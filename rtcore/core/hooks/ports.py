"""What the core asks of the trio layer's hook client and webhook queues (Protocols: the
server provides them; the core only makes the coroutine a :class:`Deferred` awaits)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import attrs

from rtcore.core.hooks.answers import Verdict


@attrs.frozen
class Unavailable:
    """The hook could not answer: timed out, failed, answered garbage, or its breaker is
    open. ``reason`` is for the client's message and the logs."""

    reason: str


HookOutcome = Verdict | Unavailable


class HookCaller(Protocol):
    """An app's hook client (rtcore.server.hooks.HookClient)."""

    def call(self, kind: str, body: dict[str, Any]) -> Awaitable[HookOutcome]:
        """Ask the ``kind`` hook (``connect``, ``join``, ``publish``); never raises for the
        backend's failures (they are :class:`Unavailable`), and ends within its timeout."""
        ...

    @property
    def timeout(self) -> float: ...

    def cached_join(self, user: str, channel: str, now: float) -> Verdict | None: ...

    def cache_join(self, user: str, channel: str, verdict: Verdict, now: float) -> None: ...


class EventSink(Protocol):
    """Where an app's webhook events go (rtcore.server.webhooks.AppWebhooks)."""

    def wants(self, event: str, channel: str | None = None) -> bool: ...

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue the event for every webhook that wants it; never blocks, never raises."""
        ...


class NoEvents:
    """An app without webhooks."""

    def wants(self, event: str, channel: str | None = None) -> bool:
        return False

    def emit(self, event: str, data: dict[str, Any]) -> None:
        return None


NO_EVENTS = NoEvents()
