"""The observer that writes log lines: connections at INFO (rate-limited), refusals at DEBUG.

Each connection's open and close is an INFO line carrying ``conn``, ``app``, ``remote`` (and
``code``, ``reason``, ``duration`` on close) as extra fields, which ``--log-format json`` turns
into JSON keys. Under load these lines would swamp the log, so at most ``per_second`` of them
are written per second; the rest are counted and summarised in one line, "suppressed K
connection logs", when the next second begins (or at :meth:`LogObserver.flush`, on shutdown).
Refusals and rate-limit refusals are DEBUG lines (not rate-limited: DEBUG is for looking), and
so are the ends of connections that never became a WebSocket (plain HTTP: the demo's files).
Slow consumers are INFO lines under the same limit as connections.

Errors are not logged here: an exception is logged once, with its traceback, where it is
caught (the connection's or the HTTP request's error boundary); the close that follows it is
an ordinary close line with code 1011.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rtcore.observe.events import NO_CLOSE, Closed, Connected, FlushPass

PER_SECOND = 50


class LogObserver:
    """Writes connection, refusal and slow-consumer events to the ``rtcore.*`` loggers.

    Args:
        per_second: the most connection lines (open, close, slow consumer) per second.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self, per_second: int = PER_SECOND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.connections = logging.getLogger("rtcore.connections")
        self.refusals = logging.getLogger("rtcore.refusals")
        self._per_second = per_second
        self._clock = clock
        self._window = -1e18
        self._written = 0
        self.suppressed = 0
        """Connection lines dropped in the current second, not yet summarised."""

    def connected(self, event: Connected) -> None:
        self._info(
            "connection %s open: app %s, user %s, from %s",
            (event.conn, event.app, event.user, event.remote),
            {"conn": event.conn, "app": event.app, "user": event.user, "remote": event.remote},
        )

    def closed(self, event: Closed) -> None:
        if event.code == NO_CLOSE:
            # Never a WebSocket: a plain HTTP request (the demo's files) or a peer that sent
            # nothing usable. One INFO line per static file would drown the connection log.
            self.connections.debug(
                "connection %s ended without a WebSocket after %.3f s (from %s)",
                event.conn,
                event.duration,
                event.remote,
                extra={"conn": event.conn, "remote": event.remote, "code": event.code},
            )
            return
        how = f"{event.code} ({event.reason})" if event.reason else str(event.code)
        self._info(
            "connection %s closed: %s after %.3f s (app %s, from %s)",
            (event.conn, how, event.duration, event.app, event.remote),
            {
                "conn": event.conn,
                "app": event.app,
                "remote": event.remote,
                "code": event.code,
                "reason": event.reason,
                "duration": round(event.duration, 6),
            },
        )

    def slow_consumer(self, conn: str, remote: str, queued: int) -> None:
        self._info(
            "connection %s (%s) is a slow consumer: %d bytes queued, closing",
            (conn, remote, queued),
            {"conn": conn, "remote": remote, "queued": queued},
        )

    def refused(self, conn: str, app: str, code: str, operation: str) -> None:
        if self.refusals.isEnabledFor(logging.DEBUG):
            self.refusals.debug(
                "connection %s: %s refused in app %s: %s",
                conn,
                operation,
                app,
                code,
                extra={"conn": conn, "app": app, "code": code, "operation": operation},
            )

    def rate_limited(self, conn: str, app: str, limiter: str, operation: str) -> None:
        if self.refusals.isEnabledFor(logging.DEBUG):
            self.refusals.debug(
                "connection %s: %s rate-limited in app %s by limiter %s",
                conn,
                operation,
                app,
                limiter,
                extra={
                    "conn": conn,
                    "app": app,
                    "code": "rate_limited",
                    "limiter": limiter,
                    "operation": operation,
                },
            )

    def flush_pass(self, event: FlushPass) -> None:
        if self.suppressed and self._clock() - self._window >= 1.0:
            self.flush()

    def flush(self) -> None:
        """Write the summary of suppressed lines, if any."""
        if self.suppressed:
            self.connections.info(
                "suppressed %d connection logs (over %d per second)",
                self.suppressed,
                self._per_second,
                extra={"suppressed": self.suppressed},
            )
            self.suppressed = 0

    def _info(self, msg: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
        if not self.connections.isEnabledFor(logging.INFO):
            return
        now = self._clock()
        if now - self._window >= 1.0:
            self.flush()
            self._window, self._written = now, 0
        if self._written >= self._per_second:
            self.suppressed += 1
            return
        self._written += 1
        self.connections.info(msg, *args, extra=extra)
