"""Keeping the cyclic garbage collector's pauses short on a server with many connections (trio).

CPython's collector stops the process for a full collection in proportion to every object it
tracks: about 50 per idle connection, so ~120 ms at 5,000 connections on the project's machine
(``python -m bench.gc_pause``, bench/RESULTS.md). It runs one whenever the objects that
survived into the oldest generation grew by a quarter, which connection churn does all the
time: the deliveries in flight wait for the pause.

:class:`GcFreezer` (``rtcore serve`` turns it on; embedders opt in with
``rtcore.Server(..., gc_freeze=True)``) runs, every :data:`FREEZE_EVERY` seconds, a full
collection and then ``gc.freeze()``: what survived is moved to the permanent generation, which
later collections do not scan. A collection then only scans what was created since the last
pass, so it stays short however many connections are open.

The price of a freeze is that a frozen object that later becomes part of a garbage *cycle*
is never collected. A closed connection is freed by reference counting, not by the collector
(every connection calls :func:`break_cycles` as it closes, and
tests/integration/test_gc_policy.py checks that a closed connection leaves no cyclic garbage),
but other code -- the embedding application's too -- may not. So the frozen count is watched:
when it grew past :data:`VALVE_GROWTH` times what it was after the last valve (and by at least
:data:`VALVE_FLOOR` objects), everything is unfrozen and collected once -- one full pause,
where CPython would have taken many -- and frozen again. What can leak is bounded by the live
heap; the full pauses happen only when the frozen heap doubled.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import trio

from rtcore.core.outbox import Outbox

log = logging.getLogger("rtcore.server")

FREEZE_EVERY = 1.0
"""Seconds between two passes (a collection of what is not frozen, then a freeze)."""
VALVE_GROWTH = 2.0
"""Unfreeze and collect everything when the frozen objects grew by this factor."""
VALVE_FLOOR = 100_000
"""...and by at least this many objects (so a small server is not collected every pass)."""


def break_cycles(outbox: Outbox, frames: Any) -> None:
    """Drop the references that make a closed connection a reference cycle, so that it is freed
    as soon as its task ends rather than by the collector -- and cannot leak once frozen.

    The cycles: the outbox names its connection (``owner``; the flusher skips closed
    outboxes and the in-process API a missing owner), and wsproto's frame protocol (in
    ``frames``, the connection's wsproto object) holds its parser, a generator whose frame
    holds the protocol: closing the generator frees that frame."""
    outbox.owner = None
    proto = getattr(frames, "_proto", None)
    parser = getattr(proto, "_parse_more", None)
    if parser is not None:
        parser.close()


class GcFreezer:
    """The process's collector, kept to short collections (see the module's docstring).

    Args:
        every: seconds between passes.
        growth, floor: the valve (:data:`VALVE_GROWTH`, :data:`VALVE_FLOOR`).
    """

    def __init__(
        self, every: float = FREEZE_EVERY, growth: float = VALVE_GROWTH, floor: int = VALVE_FLOOR
    ) -> None:
        self.every = every
        self.growth = growth
        self.floor = floor
        self.base = 0
        """Frozen objects right after the last valve (or the first pass)."""
        self.estimate = 0
        """Frozen objects, as counted when frozen: frozen objects that died since are still in
        it (``gc.get_freeze_count()`` walks every frozen object, ~10 ms at 1,000 connections:
        it is only asked when this estimate says the valve may be due)."""
        self.valves = 0
        """How many times everything was unfrozen and collected."""

    def settle(self) -> None:
        """One pass: collect the garbage among the objects not frozen yet, freeze the rest;
        open the valve if the frozen heap doubled."""
        gc.collect()
        self.estimate += len(gc.get_objects())  # what is not frozen yet (the permanent aside)
        gc.freeze()
        if not self.base:
            self.base = self.estimate = gc.get_freeze_count()
        elif self.estimate > self._limit():
            frozen = gc.get_freeze_count()
            if frozen > self._limit():
                self.valve()
            else:
                self.estimate = frozen

    def _limit(self) -> float:
        return max(self.base * self.growth, self.base + self.floor)

    def valve(self) -> None:
        """Unfreeze, collect everything (cycles that died while frozen), freeze again."""
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.valves += 1
        log.debug("gc: full collection after the frozen heap grew: %d objects freed", freed)
        self.base = self.estimate = gc.get_freeze_count()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Pass every :attr:`every` seconds until cancelled; unfreezes on the way out (the
        process may go on without a server, e.g. tests)."""
        try:
            self.settle()
            task_status.started()
            while True:
                await trio.sleep(self.every)
                self.settle()
        finally:
            gc.unfreeze()
