"""The settings page's read-only view of an app's hooks and webhooks and their health
(rtcore.server.integrations): URLs, breaker state, outcomes, queues, deliveries, drops."""

from __future__ import annotations

from typing import Any


def health(server: object, app: str) -> dict[str, Any]:
    """``{"hooks": {...} or None, "webhooks": [...]}`` for ``app``."""
    integrations = getattr(server, "integrations", None)
    if integrations is None:
        return {"hooks": None, "webhooks": []}
    client = integrations.hooks.get(app)
    webhooks = [e.health() for (name, _), e in integrations.endpoints.items() if name == app]
    return {"hooks": client.health() if client is not None else None, "webhooks": webhooks}
