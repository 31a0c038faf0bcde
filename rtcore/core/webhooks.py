"""Webhook events waiting for delivery (sans-IO): a bounded queue per endpoint and the retry
backoff. Realtime traffic only ever appends (never waits): past the bound an event is
dropped and counted. The trio layer (rtcore.server.webhooks) takes batches and posts them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rtcore.core.hooks.ports import EventSink

TRANSITIONS = {
    "o": "channel_occupied",
    "v": "channel_vacated",
    "a": "member_added",
    "r": "member_removed",
}
"""A cluster transition's kind -> its webhook event (:func:`transition`)."""


class EventQueue:
    """Events for one endpoint, oldest first, at most ``limit``."""

    __slots__ = ("limit", "_events", "dropped", "queued")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: deque[dict[str, Any]] = deque()
        self.dropped = 0
        """Events refused because the queue was full."""
        self.queued = 0
        """Events accepted, ever."""

    def push(self, event: dict[str, Any]) -> bool:
        """Queue ``event``; False (dropped, counted) when the queue is full."""
        if len(self._events) >= self.limit:
            self.dropped += 1
            return False
        self._events.append(event)
        self.queued += 1
        return True

    def take(self, most: int) -> list[dict[str, Any]]:
        """The oldest ``most`` events, removed."""
        events = self._events
        return [events.popleft() for _ in range(min(most, len(events)))]

    def __len__(self) -> int:
        return len(self._events)


def retry_delay(attempt: int, base: float, cap: float, unit: float) -> float:
    """Seconds before try ``attempt + 1`` (``attempt`` >= 1 tries failed): full jitter,
    ``unit`` (uniform in [0, 1), passed in) times ``base * 2**(attempt - 1)`` capped at
    ``cap``."""
    return unit * min(cap, base * 2.0 ** (attempt - 1))


def transition(events: EventSink, channel: str, change: str) -> None:
    """Tell ``events`` of a transition of ``channel`` for the whole cluster: ``o`` occupied,
    ``v`` vacated, ``a:<user>`` the user's first connection in it, ``r:<user>`` their last
    left (made by this node, or by the presence scripts over Redis)."""
    kind, _, user = change.partition(":")
    event = TRANSITIONS.get(kind)
    if event is None or not events.wants(event):
        return
    data: dict[str, Any] = {"channel": channel}
    if user:
        data["user"] = user
    events.emit(event, data)
