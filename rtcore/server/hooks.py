"""An app's hook client (trio, httpx): signed POSTs to the backend, bounded by a timeout, a
concurrency limit and a circuit breaker (docs/hooks.md).

Every failure of the backend -- a timeout, a refused or dropped connection, a status other
than 200, an answer that is not a valid one -- becomes :class:`Unavailable` (the client is
refused ``hook_unavailable``) and counts against the breaker; a call never raises for them.
Calls of one app never wait for another app's: each app has its own limiter and breaker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

from rtcore.config.hook_settings import HooksConfig
from rtcore.core.hooks import answers
from rtcore.core.hooks.breaker import Breaker
from rtcore.core.hooks.cache import AnswerCache
from rtcore.core.hooks.ports import HookOutcome, Unavailable
from rtcore.core.hooks.signing import signed_headers
from rtcore.observe.throttled_log import ThrottledLog
from rtcore.protocol.values import dumps_json

log = logging.getLogger("rtcore.hooks")
MAX_ANSWER_BYTES = 256 * 1024
"""Largest hook answer read; a longer one is a failure."""
OUTCOMES = ("allow", "deny", "unavailable", "breaker_open")


@attrs.define
class HookStatistics:
    """Per app and hook kind: outcomes and the latency of answered calls (metrics)."""

    outcomes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """(kind, outcome) -> calls; outcomes: allow, deny, unavailable, breaker_open."""
    latency_sum: dict[str, float] = attrs.field(factory=dict)
    latency_count: dict[str, int] = attrs.field(factory=dict)
    latency_buckets: dict[str, list[int]] = attrs.field(factory=dict)
    in_flight: int = 0
    last_failure: str | None = None

    def count(self, kind: str, outcome: str) -> None:
        self.outcomes[(kind, outcome)] = self.outcomes.get((kind, outcome), 0) + 1

    def took(self, kind: str, seconds: float) -> None:
        self.latency_sum[kind] = self.latency_sum.get(kind, 0.0) + seconds
        self.latency_count[kind] = self.latency_count.get(kind, 0) + 1
        buckets = self.latency_buckets.setdefault(kind, [0] * len(LATENCY_BUCKETS))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HookClient:
    """The hooks of one app (rtcore.core.hooks.ports.HookCaller)."""

    def __init__(
        self,
        app: str,
        settings: HooksConfig,
        http: httpx.AsyncClient,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings
        self._http = http
        self._wall = wall
        self._limiter = trio.CapacityLimiter(settings.max_concurrency)
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_open)
        self.cache: AnswerCache[answers.Verdict] = AnswerCache(settings.join_cache_ttl)
        self.statistics = HookStatistics()
        self.latency_bounds = LATENCY_BUCKETS
        self._warn = ThrottledLog(log)

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    def cached_join(self, user: str, channel: str, now: float) -> answers.Verdict | None:
        return self.cache.get((user, channel), now) if self.cache.ttl > 0 else None

    def cache_join(self, user: str, channel: str, verdict: answers.Verdict, now: float) -> None:
        self.cache.put((user, channel), verdict, now)

    async def call(self, kind: str, body: dict[str, Any]) -> HookOutcome:
        """Ask the ``kind`` hook, within its timeout (the wait for a free slot included)."""
        url = self.settings.url(kind)
        if url is None:
            return Unavailable(f"no {kind}_url")
        now = trio.current_time()
        if not self.breaker.allow(now):
            self.statistics.count(kind, "breaker_open")
            return Unavailable("circuit breaker open")
        outcome: HookOutcome = Unavailable(f"no answer within {self.settings.timeout:g} s")
        started = now
        with trio.move_on_after(self.settings.timeout):
            async with self._limiter:
                started = trio.current_time()
                outcome = await self._post(kind, url, body)
        self._settle(kind, outcome, trio.current_time() - started)
        return outcome

    async def _post(self, kind: str, url: str, body: dict[str, Any]) -> HookOutcome:
        payload = dumps_json(body)
        headers = signed_headers(self.settings.secret, self._wall(), payload)
        self.statistics.in_flight += 1
        try:
            async with self._http.stream("POST", url, content=payload, headers=headers) as reply:
                data = b""
                async for chunk in reply.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER_BYTES:
                        return Unavailable(f"answer over {MAX_ANSWER_BYTES} bytes")
            return answers.parse(kind, reply.status_code, data)
        except answers.AnswerError as exc:
            return Unavailable(str(exc))
        except httpx.HTTPError as exc:
            return Unavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            self.statistics.in_flight -= 1

    def _settle(self, kind: str, outcome: HookOutcome, took: float) -> None:
        now = trio.current_time()
        stats = self.statistics
        if isinstance(outcome, Unavailable):
            self.breaker.failed(now)
            stats.count(kind, "unavailable")
            stats.last_failure = f"{kind}: {outcome.reason}"
            self._warn.warning(
                now, "app %s: %s hook unavailable: %s", self.app, kind, outcome.reason
            )
            return
        self.breaker.succeeded()
        stats.count(kind, "allow" if outcome.allow else "deny")
        stats.took(kind, took)

    def health(self) -> dict[str, Any]:
        """For the settings page: urls, breaker state, counts, the last failure."""
        now = trio.current_time()
        stats = self.statistics
        return {
            "urls": {k: self.settings.url(k) for k in ("connect", "join", "publish")},
            "breaker": self.breaker.state(now),
            "in_flight": stats.in_flight,
            "outcomes": {f"{k}:{o}": n for (k, o), n in sorted(stats.outcomes.items())},
            "last_failure": stats.last_failure,
        }
