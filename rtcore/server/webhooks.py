"""Webhooks (trio): each app's events posted, signed and batched, to its endpoints
(docs/hooks.md).

One sender task per endpoint: it waits for a first event, lets the batch window pass (or
100 events gather), and posts them as one request; a failure (a timeout, a dropped
connection, a status other than 2xx) is retried with jittered exponential backoff up to
``max_attempts`` tries, then the batch is dropped (counted, logged). Delivery is at least
once: a receiver de-duplicates by each event's ``id``. Emitting never waits: the queue is
bounded and its overflow is dropped (counted, logged).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx
import trio

from rtcore.config.hook_settings import WEBHOOK_BATCH_MAX, WebhookConfig
from rtcore.core.hooks.signing import signed_headers
from rtcore.core.webhooks import EventQueue, retry_delay
from rtcore.observe.throttled_log import ThrottledLog
from rtcore.protocol.values import dumps_json

log = logging.getLogger("rtcore.webhooks")


@attrs.define
class WebhookStatistics:
    delivered: int = 0
    """Events delivered (a 2xx answer to their batch)."""
    requests: int = 0
    retries: int = 0
    """Tries after a failed one."""
    failed: int = 0
    """Events dropped after ``max_attempts`` failed tries."""
    last_failure: str | None = None


class Endpoint:
    """One ``[[apps.webhooks]]`` of one app: its queue and its sender."""

    def __init__(self, app: str, settings: WebhookConfig) -> None:
        self.app = app
        self.settings = settings
        self.queue = EventQueue(settings.queue_size)
        self.statistics = WebhookStatistics()
        self._wake = trio.Event()
        self._warn = ThrottledLog(log)

    def push(self, event: dict[str, Any]) -> None:
        if self.queue.push(event):
            self._wake.set()
            return
        self._warn.warning(
            trio.current_time(),
            "app %s: webhook %s queue full (%d): events dropped (%d so far)",
            self.app,
            self.settings.url,
            self.queue.limit,
            self.queue.dropped,
        )

    async def run(self, http: httpx.AsyncClient, wall: Callable[[], float]) -> None:
        """Deliver batches until cancelled."""
        settings = self.settings
        while True:
            if not len(self.queue):
                self._wake = trio.Event()
                await self._wake.wait()
            if len(self.queue) < WEBHOOK_BATCH_MAX:
                await trio.sleep(settings.batch_window)
            batch = self.queue.take(WEBHOOK_BATCH_MAX)
            try:
                await self._deliver(http, wall, batch)
            except Exception:  # an error boundary: the sender lives on
                log.exception("app %s: webhook %s failed", self.app, settings.url)

    async def _deliver(
        self, http: httpx.AsyncClient, wall: Callable[[], float], batch: list[dict[str, Any]]
    ) -> None:
        settings, stats = self.settings, self.statistics
        payload = dumps_json({"app": self.app, "events": batch})
        for attempt in range(1, settings.max_attempts + 1):
            if attempt > 1:
                stats.retries += 1
            failure = await self._post(http, payload, wall())
            if failure is None:
                stats.delivered += len(batch)
                return
            stats.last_failure = failure
            if attempt < settings.max_attempts:
                delay = retry_delay(
                    attempt, settings.retry_base, settings.retry_max, random.random()
                )
                await trio.sleep(delay)
        stats.failed += len(batch)
        log.warning(
            "app %s: webhook %s: %d events dropped after %d tries (%s)",
            self.app,
            settings.url,
            len(batch),
            settings.max_attempts,
            stats.last_failure,
        )

    async def _post(self, http: httpx.AsyncClient, payload: bytes, wall: float) -> str | None:
        """One try: None when delivered, else why not."""
        self.statistics.requests += 1
        headers = signed_headers(self.settings.secret, wall, payload)
        with trio.move_on_after(self.settings.timeout):
            try:
                reply = await http.post(self.settings.url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if 200 <= reply.status_code < 300:
                return None
            return f"HTTP {reply.status_code}"
        return f"no answer within {self.settings.timeout:g} s"

    def health(self) -> dict[str, Any]:
        stats = self.statistics
        return {
            "url": self.settings.url,
            "events": list(self.settings.events),
            "queued": len(self.queue),
            "dropped": self.queue.dropped,
            "delivered": stats.delivered,
            "retries": stats.retries,
            "failed": stats.failed,
            "last_failure": stats.last_failure,
        }


class AppWebhooks:
    """An app's endpoints (rtcore.core.hooks.ports.EventSink)."""

    def __init__(
        self, app: str, endpoints: list[Endpoint], ids: Callable[[], str], wall: Callable[[], float]
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self._ids = ids
        self._wall = wall
        self._wanted = {e for ep in endpoints for e in ep.settings.events}

    def wants(self, event: str, channel: str | None = None) -> bool:
        if event not in self._wanted:
            return False
        return event != "client_message" or any(
            ep.settings.wants(event, channel) for ep in self.endpoints
        )

    def emit(self, event: str, data: dict[str, Any]) -> None:
        record = {"id": self._ids(), "name": event, "time": int(self._wall() * 1000), **data}
        channel = data.get("channel")
        for endpoint in self.endpoints:
            if endpoint.settings.wants(event, channel):
                endpoint.push(record)


def event_ids(node: str) -> Callable[[], str]:
    """Unique event ids: the node's, then a counter."""
    counter = itertools.count(1)
    return lambda: f"{node}-{next(counter):x}"


def endpoints_by_app(
    apps: Mapping[str, Any], running: Mapping[tuple[str, WebhookConfig], Endpoint]
) -> dict[tuple[str, WebhookConfig], Endpoint]:
    """Every (app, webhook settings) the apps' settings name: a running endpoint kept when its
    settings did not change, a new one otherwise."""
    wanted: dict[tuple[str, WebhookConfig], Endpoint] = {}
    for name, app in apps.items():
        for settings in app.settings.webhooks:
            key = (name, settings)
            wanted[key] = running.get(key) or Endpoint(name, settings)
    return wanted


def wall_clock() -> float:
    return time.time()
