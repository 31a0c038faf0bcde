"""The server's side of observability: its observers, and the reports of closes and of the
stop. (``/metrics`` and ``/readyz`` are answered by rtcore.server.http.operating.)"""

from __future__ import annotations

import logging
from typing import Protocol

from rtcore.core.session.session import Session
from rtcore.observe.events import Closed, Observer, Observers, ServerStatistics
from rtcore.observe.logs import LogObserver
from rtcore.observe.metrics import Measured, ServerMetrics

log = logging.getLogger("rtcore.server")


class Reported(Protocol):
    """Where a connection's close is counted and reported (the Server)."""

    @property
    def statistics(self) -> ServerStatistics: ...

    @property
    def observer(self) -> Observer: ...


class Ended(Protocol):
    """A connection that has ended (rtcore.server.connection.Connection)."""

    @property
    def id(self) -> str: ...

    @property
    def remote(self) -> str: ...

    @property
    def session(self) -> Session: ...

    @property
    def close_code(self) -> tuple[int, str]: ...


def setup(
    measured: Measured, metrics: bool, extra: Observer | None
) -> tuple[Observer, LogObserver, ServerMetrics | None]:
    """The server's observer: logs always, metrics when on, and the embedder's own observer
    last."""
    logs = LogObserver()
    collected = ServerMetrics(measured) if metrics else None
    parts: list[Observer] = [logs]
    if collected is not None:
        parts.append(collected)
    if extra is not None:
        parts.append(extra)
    return Observers(parts), logs, collected


def closed(reported: Reported, conn: Ended, duration: float) -> None:
    """Count and report a connection that has ended."""
    code, reason = conn.close_code
    code = int(code)  # not an enum member: its int is the label
    reported.statistics.count_close(code)
    app = conn.session.app
    reported.observer.closed(
        Closed(conn.id, conn.remote, app.name if app else None, code, reason, duration)
    )


def stopped(logs: LogObserver, statistics: ServerStatistics) -> None:
    """The server has stopped: the last log lines."""
    logs.flush()
    log.info("rtcore stopped", extra={"accepted": statistics.accepted})
