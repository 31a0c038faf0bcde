"""The report's charts, drawn with matplotlib (the ``rtcore[loadtest]`` extra) into PNG bytes.

Each chart takes one or more labelled results, so a report (one run) and a comparison (two
runs, before and after) draw the same charts.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from rtcore.loadtest import stats  # noqa: E402

Runs = list[tuple[str, dict[str, Any]]]
COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700")


def _png(draw: Callable[[Axes], None], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        draw(ax)
        ax.set_title(title, loc="left", fontsize=11)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)


def _times(result: dict[str, Any]) -> list[int]:
    return [row["t"] for row in result["series"]]


def connections(runs: Runs) -> bytes:
    def draw(ax: Axes) -> None:
        for (label, result), color in zip(runs, COLORS, strict=False):
            rows = result["series"]
            ax.step(
                _times(result),
                [r["open"] for r in rows],
                where="post",
                color=color,
                label=f"{label}: open",
            )
            ax.bar(
                _times(result),
                [r["opened"] for r in rows],
                alpha=0.3,
                color=color,
                label=f"{label}: opened in the second",
            )
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("connections")

    return _png(draw, "Connections over time")


def deliveries(runs: Runs) -> bytes:
    def draw(ax: Axes) -> None:
        for (label, result), color in zip(runs, COLORS, strict=False):
            rows = result["series"]
            ax.plot(
                _times(result),
                [r["deliveries"] for r in rows],
                marker=".",
                color=color,
                label=f"{label}: deliveries/s",
            )
            ax.plot(
                _times(result),
                [r["sent"] for r in rows],
                linestyle="--",
                color=color,
                alpha=0.6,
                label=f"{label}: sent/s",
            )
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("per second")

    return _png(draw, "Deliveries and sends per second")


def latency_over_time(runs: Runs) -> bytes:
    def draw(ax: Axes) -> None:
        for (label, result), color in zip(runs, COLORS, strict=False):
            for p, style in ((50, "-"), (99, "--")):
                points = [
                    (row["t"], value * 1000)
                    for row in result["series"]
                    if (value := stats.percentile(_hist(row["latency"]), p)) is not None
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, style, marker=".", color=color, label=f"{label}: p{p}")
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("ms")
        _no_data(ax, runs)

    return _png(draw, "Latency percentiles per second (send to delivery)")


def latency_distribution(runs: Runs) -> bytes:
    def draw(ax: Axes) -> None:
        for (label, result), color in zip(runs, COLORS, strict=False):
            hist = _hist(result["latency"]["histogram"])
            total = sum(hist.values())
            if not total:
                continue
            keys = sorted(hist)
            xs = [stats.bucket_upper(k) * 1000 for k in keys]
            seen, ys = 0, []
            for k in keys:
                seen += hist[k]
                ys.append(100 * seen / total)
            ax.step(xs, ys, where="post", color=color, label=f"{label} ({total:,} samples)")
            ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_ylabel("% of deliveries at or below")
        _no_data(ax, runs)

    return _png(draw, "Latency distribution (cumulative)")


def refusals(runs: Runs) -> bytes:
    def draw(ax: Axes) -> None:
        keys = sorted(
            {f"refused: {k}" for _, r in runs for k in r["refusals"]}
            | {f"closed: {k}" for _, r in runs for k in r["closes"]}
        )
        if not keys:
            ax.text(
                0.5,
                0.5,
                "no refusals and no closes",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            return
        width = 0.8 / len(runs)
        for i, ((label, result), color) in enumerate(zip(runs, COLORS, strict=False)):
            values = [_refusal_count(result, k) for k in keys]
            positions = [j + i * width for j in range(len(keys))]
            ax.barh(positions, values, height=width, color=color, label=label)
        ax.set_yticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, fontsize=8)
        ax.set_xlabel("count")

    return _png(draw, "Refusals and close codes")


def _refusal_count(result: dict[str, Any], key: str) -> int:
    kind, code = key.split(": ", 1)
    table = result["refusals"] if kind == "refused" else result["closes"]
    return int(table.get(code, 0))


def _hist(raw: dict[Any, int]) -> dict[int, int]:
    return stats.merge_hist({}, raw)


def _no_data(ax: Axes, runs: Runs) -> None:
    if not any(result["latency"]["samples"] for _, result in runs):
        ax.text(
            0.5,
            0.5,
            "no latency samples in this scenario",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )


CHARTS: tuple[tuple[str, Callable[[Runs], bytes]], ...] = (
    ("connections", connections),
    ("deliveries", deliveries),
    ("latency-over-time", latency_over_time),
    ("latency-distribution", latency_distribution),
    ("refusals", refusals),
)
"""Every chart of a report, by the id its image has in the HTML."""
