"""What the worker supervisor decides, as plain values: no processes, no clock (``now`` is
passed in), so that every rule is unit-tested without starting anything.

Theory of operation:

- ``--workers 1`` is the single process of old, with no supervisor. More workers need the
  Redis broker (each worker is a node; without Redis a client would only reach the clients
  of the worker that accepted it) and fixed ports (port 0 would give each worker its own
  port): :func:`refusal` says why not, in one line.
- A worker that exits while the supervisor is not stopping has crashed, whatever its status
  (a SIGKILL, an exception, or an exit 0 nobody asked for). It is restarted after a delay that
  doubles with each recent restart (:class:`RestartPolicy`), unless it had never come up
  (a failure at start: a restart would fail the same way) or there were already
  ``max_restarts`` restarts in the last ``window`` seconds: then the supervisor gives up and
  stops every worker.
- A stop gives each worker its whole graceful shutdown (``limits.shutdown_grace`` and
  ``limits.close_timeout``) and :data:`STOP_MARGIN` more (:func:`stop_bound`); then it kills
  the stragglers.
"""

from __future__ import annotations

import collections
import signal

import attrs

from rtcore.config.model import Config, Limits

MAX_WORKERS = 256
"""The most workers ``--workers`` accepts (a typo should not start thousands of processes)."""
MAX_RESTARTS = 5
"""Restarts of crashed workers (all workers together) allowed in :data:`RESTART_WINDOW`..."""
RESTART_WINDOW = 60.0
"""...seconds; one more crash within it stops everything (exit status 1)."""
FIRST_DELAY = 0.5
"""Seconds before restarting the first crashed worker of a window; each further restart in
the window waits twice as long as the one before..."""
MAX_DELAY = 10.0
"""...up to this many seconds."""
STOP_MARGIN = 5.0
"""Seconds a stopping worker gets beyond its graceful shutdown before it is killed."""


def parse_count(text: str) -> int | None:
    """The number of workers ``--workers`` asks for, or None if it is not 1..MAX_WORKERS."""
    try:
        count = int(text)
    except ValueError:
        return None
    return count if 1 <= count <= MAX_WORKERS else None


def refusal(conf: Config, count: int) -> str | None:
    """Why ``conf`` cannot be served by ``count`` workers (one line), or None if it can."""
    if count == 1:
        return None
    if conf.broker.kind != "redis":
        return (
            f'--workers {count} needs [broker] kind = "redis" in the config file (now '
            f"{conf.broker.kind!r}): each worker is a node and reaches the others' clients "
            "through Redis; set [broker] kind and url, or serve with --workers 1"
        )
    zero = [name for name, port in (("port", conf.port), ("api_port", conf.api_port)) if port == 0]
    if zero:
        return (
            f"--workers {count} needs fixed ports: {' and '.join(zero)} 0 (any free port) would "
            "give each worker a port of its own; set server.port and server.api_port (or "
            "--port and --api-port) to port numbers"
        )
    return None


def stop_bound(limits: Limits) -> float:
    """Seconds from the stop signal after which a worker still running is killed."""
    return limits.shutdown_grace + limits.close_timeout + STOP_MARGIN


def exit_description(returncode: int) -> str:
    """How a process ended, for the log: ``exit status 1`` or ``killed by SIGKILL``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@attrs.frozen
class Restart:
    """Restart the crashed worker after ``delay`` seconds."""

    delay: float


@attrs.frozen
class GiveUp:
    """Do not restart: stop every worker (exit status 1), for ``reason``."""

    reason: str


@attrs.define
class RestartPolicy:
    """When to restart a crashed worker, and when to give up (all workers count together).

    The delay before the k-th restart within ``window`` seconds is ``first_delay × 2^(k-1)``,
    at most ``max_delay``; the crash after ``max_restarts`` of them in the window gives up,
    and so does a worker that crashed before it ever served. It remembers at most
    ``max_restarts`` restart times.
    """

    max_restarts: int = MAX_RESTARTS
    window: float = RESTART_WINDOW
    first_delay: float = FIRST_DELAY
    max_delay: float = MAX_DELAY
    _restarts: collections.deque[float] = attrs.field(factory=collections.deque, init=False)

    def after_crash(self, now: float, *, served: bool) -> Restart | GiveUp:
        """A worker exited unasked at ``now``; ``served``: it had reported itself serving."""
        if not served:
            return GiveUp("it exited before serving, and would again (see its error above)")
        while self._restarts and now - self._restarts[0] >= self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return GiveUp(
                f"already {len(self._restarts)} restarts in the last {self.window:g} s, "
                "the most allowed"
            )
        delay = min(self.first_delay * 2 ** len(self._restarts), self.max_delay)
        self._restarts.append(now)
        return Restart(delay)
