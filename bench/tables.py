"""The harness's output: markdown tables, medians over runs, progress lines on stderr, and
the checks that a row is complete and meaningful."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from typing import Any


def table(
    rows: list[dict[str, Any]], cols: list[tuple[str, str, str]], baseline: str = "naive"
) -> str:
    base = next((r for r in rows if r["server"] == baseline), None)
    head = [c[1] for c in cols] + ([f"vs {baseline}"] if base else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r[key], fmt) for key, _, fmt in cols]
        if base:
            cells.append(f"{r['rate'] / base['rate']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"  # not measured (e.g. Redis figures of the one-node memory broker)
    return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}"
    )


def progress(message: str) -> None:
    """A progress line on stderr (stdout keeps only the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median_run(runs: int, fn: Any, *args: Any, key: str = "rate") -> dict[str, Any]:
    """Run ``runs`` times; return the run with the median ``key`` (noisy machines), noting
    every run's value."""
    return _median(
        [
            _timed(f"{fn.__name__.removeprefix('run_')} {args[0]}", i, runs, fn, *args)
            for i in range(runs)
        ],
        key,
    )


def _timed(what: str, i: int, runs: int, fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)``, with progress lines on stderr before and after."""
    what = f"{what}, run {i + 1}/{runs}"
    progress(f"{what} ...")
    started = time.monotonic()
    result: dict[str, Any] = fn(*args)
    progress(f"{what} done in {time.monotonic() - started:.1f} s")
    return result


def interleaved_runs(
    runs: int,
    kinds: list[str],
    fn: Any,
    key: str = "rate",
    scenario: str = "",
    medians: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """``median_run`` for several servers, taking turns (run 1 of each, then run 2...), so
    that a machine getting busier or quieter during the invocation weighs on all alike.

    Each row also gets ``<field>_median``, the median over its runs, for ``cpu_seconds`` and
    the ``medians`` fields (robust to a busy machine: what the server itself spent)."""
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for i in range(runs):
        for k in kinds:
            results[k].append(_timed(f"{scenario} {k}".strip(), i, runs, fn, k))
    rows = [_median(results[k], key) for k in kinds]
    for row, k in zip(rows, kinds, strict=True):
        for field in ("cpu_seconds", *medians):
            if field in row:
                row[f"{field}_median"] = sorted(r[field] for r in results[k])[runs // 2]
    return rows


def _median(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    runs = len(results)
    results.sort(key=lambda r: r[key])
    chosen = dict(results[len(results) // 2])
    if runs > 1:
        unit = {"rate": "deliveries/s", "seconds": "s"}.get(key, f"{key} ms")
        chosen["runs"] = (
            "/".join(f"{r[key]:,.0f}" if key == "rate" else f"{r[key]:.2f}" for r in results)
            + f" {unit}"
        )
    return chosen


MIN_SECONDS = 0.1
"""A measured interval shorter than this says more about start-up noise than throughput."""
MIN_DELIVERIES = 100_000
"""Fewer deliveries than this measure the harness, not the server."""
MIN_SAMPLES = 1000
"""Fewer latency samples than this make p99.9 a guess."""
MIN_CONNECTIONS = 1000
"""Fewer connections than this make RSS per connection a guess."""


def not_meaningful(row: dict[str, Any]) -> str | None:
    """Why a row's numbers should not be quoted, or None."""
    if row.get("seconds", math.inf) < MIN_SECONDS:
        return f"measured over {row['seconds']:.3f} s (< {MIN_SECONDS:g} s)"
    if row.get("deliveries", math.inf) < MIN_DELIVERIES:
        return f"{row['deliveries']:,} deliveries (< {MIN_DELIVERIES:,})"
    if row.get("samples", math.inf) < MIN_SAMPLES:
        return f"{row['samples']} latency samples (< {MIN_SAMPLES})"
    if "rss_per_conn" in row and row["N"] < MIN_CONNECTIONS:
        return f"{row['N']} connections (< {MIN_CONNECTIONS})"
    return None


def check_meaningful(rows: list[dict[str, Any]]) -> None:
    notes = [f"{r['server']} {why}" for r in rows if (why := not_meaningful(r)) is not None]
    if notes:
        print(f"\nNOT MEANINGFUL: {'; '.join(notes)}: use a larger -n/-m/--seconds")


def check_complete(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("deliveries") != r.get("expected"):
            print(
                f"WARNING: {r['server']} delivered {r['deliveries']:,} of {r['expected']:,}",
                file=sys.stderr,
            )


def report(
    title: str,
    rows: list[dict[str, Any]],
    cols: list[tuple[str, str, str]],
    baseline: str = "naive",
) -> None:
    """Check the counts, print the section's table and every run's value."""
    check_complete(rows)
    print(title)
    print(table(rows, cols, baseline))
    runs_note(rows)
    _metrics_ratio(rows)
    check_meaningful(rows)


def _metrics_ratio(rows: list[dict[str, Any]]) -> None:
    """With and without metrics (or channel history) in the same run: the ratio of their
    medians."""
    by = {r["server"]: r for r in rows}
    for variant in ("rtcore-metrics", "rtcore-history"):
        if "rtcore" not in by or variant not in by:
            continue
        on, off = by[variant], by["rtcore"]
        print(f"\n{variant} / rtcore: {on['rate'] / off['rate']:.3f} (median rates)")
        if off.get("cpu_seconds_median", 0) > 0 and "cpu_seconds_median" in on:
            print(
                f"server CPU seconds (median): rtcore {off['cpu_seconds_median']:.3f}, "
                f"{variant} {on['cpu_seconds_median']:.3f}: "
                f"{on['cpu_seconds_median'] / off['cpu_seconds_median']:.3f}x"
            )


def runs_note(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "runs" in r:
            print(f"\n{r['server']}: runs {r['runs']} (median shown)")
