"""The endpoints for operators, without authentication (docs/api.md, "Operating"):
``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rtcore import operations
from rtcore.engines.base import Broker
from rtcore.observe.metrics import CONTENT_TYPE, ServerMetrics
from rtcore.server.http.messages import Answer, Request, Text

PATHS = ("/healthz", "/metrics", "/readyz")
"""Endpoints answered here."""


class Operated(Protocol):
    """What the endpoints read of the server."""

    @property
    def stopping(self) -> bool: ...

    @property
    def addresses(self) -> Sequence[tuple[str, int]]: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def metrics(self) -> ServerMetrics | None: ...


def readiness(server: Operated) -> str | None:
    """Why the server should not get traffic now, or None when it is ready: listening, not
    shutting down, and its broker able to deliver."""
    if server.stopping:
        return "shutting down"
    if not server.addresses:
        return "not listening yet"
    broker = server.broker.health()
    return None if broker is None else f"broker unavailable: {broker}"


def answer(server: Operated, req: Request) -> Answer:
    """``GET /healthz``, ``GET /readyz`` and ``GET /metrics``; other methods get 405."""
    if req.method != "GET":
        raise operations.ApiError(405, "method_not_allowed", "use GET")
    if req.path == "/healthz":
        return 200, {"ok": True}
    if req.path == "/readyz":
        reason = readiness(server)
        if reason is None:
            return 200, {"ready": True}
        return 503, {"code": "not_ready", "message": reason}
    if server.metrics is None:
        raise operations.ApiError(404, "not_found", "metrics are off on this server")
    return 200, Text(server.metrics.exposition(), CONTENT_TYPE)
