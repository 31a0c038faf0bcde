"""A circuit breaker (sans-IO, ``now`` passed in): after ``failures`` failed calls in a
row it opens and calls fail at once for ``open_for`` seconds; then one probe is let through
(half-open): its success closes it, its failure opens it again."""

from __future__ import annotations

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    __slots__ = ("failures", "open_for", "_failed", "_opened", "_probing", "opened_total")

    def __init__(self, failures: int, open_for: float) -> None:
        self.failures = failures
        self.open_for = open_for
        self._failed = 0
        self._opened: float | None = None
        self._probing = False
        self.opened_total = 0
        """How many times it opened (a metric)."""

    def state(self, now: float) -> str:
        if self._opened is None:
            return CLOSED
        if self._probing or now >= self._opened + self.open_for:
            return HALF_OPEN
        return OPEN

    def allow(self, now: float) -> bool:
        """Whether a call may go out now (half-open: only the one probe)."""
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        self._failed = 0
        self._opened = None
        self._probing = False

    def failed(self, now: float) -> None:
        self._failed += 1
        if self._probing or (self._opened is None and self._failed >= self.failures):
            self._opened = now
            self._probing = False
            self.opened_total += 1
