"""The server's side of observability: its observers, closes, readiness, /metrics, /readyz.

Kept apart from server.py and http.py, which call in here from one line each.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from rtcore import operations as api
from rtcore.observe.events import Closed, Observer, Observers
from rtcore.observe.logs import LogObserver
from rtcore.observe.metrics import CONTENT_TYPE, ServerMetrics

if TYPE_CHECKING:
    from rtcore.server.connection import Connection
    from rtcore.server.http import Request
    from rtcore.server.server import Server

log = logging.getLogger("rtcore.server")

PATHS = ("/metrics", "/readyz")
"""Endpoints answered here, without authentication (docs/api.md, "Operating")."""


@attrs.frozen
class Text:
    """A response body that is not an API object: the metrics exposition, the settings
    page's files."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    """Further response headers (e.g. the settings page's Content-Security-Policy)."""


def setup(
    server: Server, metrics: bool | None, extra: Observer | None
) -> tuple[Observer, LogObserver, ServerMetrics | None]:
    """The server's observer: logs always, metrics when on (default: when the server API is),
    and the embedder's own observer last."""
    on = server.config.api_port is not None if metrics is None else metrics
    logs = LogObserver()
    collected = ServerMetrics(server) if on else None
    parts: list[Observer] = [logs]
    if collected is not None:
        parts.append(collected)
    if extra is not None:
        parts.append(extra)
    return Observers(parts), logs, collected


def closed(server: Server, conn: Connection, duration: float) -> None:
    """Count and report a connection that has ended."""
    code, reason = conn.close_code
    code = int(code)  # not an enum member: its int is the label
    server.statistics.count_close(code)
    app = conn.session.app
    server.observer.closed(
        Closed(conn.id, conn.remote, app.name if app else None, code, reason, duration)
    )


def stopped(server: Server) -> None:
    """The server has stopped: the last log lines."""
    server.log_observer.flush()
    log.info("rtcore stopped", extra={"accepted": server.statistics.accepted})


def readiness(server: Server) -> str | None:
    """Why the server should not get traffic now, or None when it is ready: listening, not
    shutting down, and its broker able to deliver."""
    if server.stopping:
        return "shutting down"
    if not server.addresses:
        return "not listening yet"
    broker = server.broker.health()
    return None if broker is None else f"broker unavailable: {broker}"


def answer(server: Server, req: Request) -> tuple[int, dict[str, Any] | Text]:
    """``GET /metrics`` and ``GET /readyz``."""
    if req.method != "GET":
        raise api.ApiError(405, "method_not_allowed", "use GET")
    if req.path == "/readyz":
        reason = readiness(server)
        if reason is None:
            return 200, {"ready": True}
        return 503, {"code": "not_ready", "message": reason}
    if server.metrics is None:
        raise api.ApiError(404, "not_found", "metrics are off on this server")
    return 200, Text(server.metrics.exposition(), CONTENT_TYPE)


def count_request(server: Server, status: int, payload: dict[str, Any] | Text) -> None:
    """Count one answered server-API request."""
    code = payload.get("code") if isinstance(payload, dict) and status >= 400 else None
    server.statistics.count_api_request(status, str(code) if code is not None else "ok")
