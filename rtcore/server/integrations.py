"""The apps' hooks and webhooks, kept in step with the settings (trio): one HTTP client
(httpx on trio) for all; a hook client per app with ``[apps.hooks]``; a sender task per
``[[apps.webhooks]]`` endpoint. A reload keeps what did not change and replaces the rest
(a removed endpoint's queued events are dropped, counted and logged)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import trio

from rtcore.config.hook_settings import WebhookConfig
from rtcore.core.app import App
from rtcore.core.hooks.ports import NO_EVENTS
from rtcore.server.hooks import HookClient
from rtcore.server.webhooks import AppWebhooks, Endpoint, endpoints_by_app, event_ids

log = logging.getLogger("rtcore.webhooks")


class Integrations:
    def __init__(self, node: str, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._ids = event_ids(node)
        self.http = httpx.AsyncClient(
            timeout=None,  # every call is bounded by a trio deadline instead
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
        )
        self.hooks: dict[str, HookClient] = {}
        self.endpoints: dict[tuple[str, WebhookConfig], Endpoint] = {}
        self._scopes: dict[tuple[str, WebhookConfig], trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    def apply(self, apps: Mapping[str, App]) -> None:
        """Give each app its hook client and webhook sink, per its current settings."""
        hooks: dict[str, HookClient] = {}
        for name, app in apps.items():
            settings = app.settings.hooks
            client = self.hooks.get(name)
            if settings is None:
                app.hooks = None
                continue
            if client is None or client.settings != settings:
                client = HookClient(name, settings, self.http, self._wall)
            hooks[name] = app.hooks = client
        self.hooks = hooks
        endpoints = endpoints_by_app(apps, self.endpoints)
        for key, old in self.endpoints.items():
            if key not in endpoints:
                self._stop(key, old)
        self.endpoints = endpoints
        for key, endpoint in endpoints.items():
            if key not in self._scopes and self._nursery is not None:
                self._nursery.start_soon(self._run, key, endpoint)
        for name, app in apps.items():
            mine = [e for (a, _), e in endpoints.items() if a == name]
            app.events = AppWebhooks(name, mine, self._ids, self._wall) if mine else NO_EVENTS

    def _stop(self, key: tuple[str, WebhookConfig], endpoint: Endpoint) -> None:
        scope = self._scopes.pop(key, None)
        if scope is not None:
            scope.cancel()
        if len(endpoint.queue):
            log.warning(
                "app %s: webhook %s removed: %d queued events dropped",
                endpoint.app,
                endpoint.settings.url,
                len(endpoint.queue),
            )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the webhook senders until cancelled; then close the HTTP client."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for key, endpoint in self.endpoints.items():
                    nursery.start_soon(self._run, key, endpoint)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.http.aclose()

    async def _run(self, key: tuple[str, WebhookConfig], endpoint: Endpoint) -> None:
        with trio.CancelScope() as scope:
            self._scopes[key] = scope
            try:
                await endpoint.run(self.http, self._wall)
            finally:
                if self._scopes.get(key) is scope:
                    del self._scopes[key]
