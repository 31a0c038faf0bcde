"""A warning logged at most once per period, counting the occurrences between (sans-IO)."""

from __future__ import annotations

import logging
import math

LOG_EVERY = 10.0
"""Seconds between log lines about the same kind of trouble."""


class ThrottledLog:
    """A warning logged at most once per ``every`` seconds, counting the occurrences between.

    ``now`` is passed in (trio.current_time()), so tests can run it on a mock clock.
    """

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self._log = logger
        self._every = every
        self._last = -math.inf
        self._skipped = 0

    def warning(self, now: float, message: str, *args: object) -> None:
        if now - self._last < self._every:
            self._skipped += 1
            return
        if self._skipped:
            message += f" (and {self._skipped} more times in the last {self._every:g} s)"
        self._log.warning(message, *args)
        self._last, self._skipped = now, 0
