"""The live display while a load test runs: one status line, rewritten in place on a
terminal, or a plain line a second when the output is a file or a pipe (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rtcore.loadtest import stats


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.every = 0.25 if self.tty else 1.0
        self.last_shown = 0.0
        self.last: tuple[float, int] | None = None
        self.rate = 0.0
        self.phase = ""

    def update(self, phase: str, elapsed: float, total: dict[str, Any], planned: int) -> None:
        """Show the aggregate of the load processes' latest reports (``runner.aggregate``)."""
        now = time.monotonic()
        delivered = total["counts"].get("deliveries", 0) + total["counts"].get("presence", 0)
        if self.last is not None and now > self.last[0]:
            self.rate = (delivered - self.last[1]) / (now - self.last[0])
        if self.quiet or (now - self.last_shown < self.every and phase == self.phase):
            return
        self.phase = phase
        self.last = (now, delivered)
        self.last_shown = now
        line = status_line(phase, elapsed, total, planned, self.rate)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, message: str) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
        self.stream.write(message + "\n")
        self.stream.flush()


def status_line(
    phase: str, elapsed: float, total: dict[str, Any], planned: int, rate: float
) -> str:
    """``[  3.2s] fanout: conns 40/40  deliveries 1,200 (850/s)  p50 1.1 ms p99 3.0 ms  refused
    close 4011 x2``."""
    counts = total["counts"]
    delivered = counts.get("deliveries", 0) + counts.get("presence", 0)
    parts = [
        f"[{elapsed:6.1f}s] {phase}:",
        f"conns {total['open']:,}/{planned:,}",
        f"deliveries {delivered:,} ({rate:,.0f}/s)",
    ]
    p50, p99 = stats.percentile(total["recent"], 50), stats.percentile(total["recent"], 99)
    if p50 is not None and p99 is not None:
        parts.append(f"p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms")
    problems = {**total["refusals"], **{f"closed {k}": v for k, v in total["closes"].items()}}
    if problems:
        shown = ", ".join(f"{k} x{v:,}" for k, v in sorted(problems.items()))
        parts.append(f"refused {shown}")
    return "  ".join(parts)
