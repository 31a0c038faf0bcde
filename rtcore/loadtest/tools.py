"""What is done with results: the HTML report (self-contained: the charts are PNGs inside
it, so it opens offline and can be mailed), ``combine`` (runs of several machines added
up), ``report`` (a result's report drawn again) and ``compare`` (two results side by side,
with the ratios after/before).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rtcore.loadtest import stats
from rtcore.loadtest.runner import FORMAT

Rows = list[tuple[str, list[Any]]]


class ResultError(Exception):
    """A file that is not a load-test result this version reads."""


def load(path: str) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: {exc}") from exc
    if not isinstance(result, dict) or result.get("format") != FORMAT:
        raise ResultError(f"{path}: not an rtcore loadtest result ({FORMAT})")
    return result


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Results of the same scenario run at the same time on several machines, added up (the
    series aligned on each run's own start: start them together)."""
    scenarios = {r["scenario"] for r in results}
    if len(scenarios) != 1:
        raise ResultError(f"cannot combine different scenarios: {', '.join(sorted(scenarios))}")
    series = stats.merge_series(r["series"] for r in results)
    hist: dict[int, int] = {}
    for r in results:
        stats.merge_hist(hist, r["latency"]["histogram"])
    out = dict(results[0])
    out.update(
        started=min(r["started"] for r in results),
        machines=sum(r["machines"] for r in results),
        workers=sum(r["workers"] for r in results),
        timed_out=any(r["timed_out"] for r in results),
        phases={k: max(r["phases"].get(k, 0) for r in results) for k in results[0]["phases"]},
        series=series,
        latency={**stats.summary(hist), "histogram": {str(k): v for k, v in hist.items()}},
    )
    for section in ("connections", "messages", "refusals", "closes"):
        out[section] = _sum_tables([r[section] for r in results])
    received = sum(r["deliveries"]["received"] for r in results)
    expected = sum(r["deliveries"]["expected"] for r in results)
    out["deliveries"] = {
        "received": received,
        "expected": expected,
        "complete": received == expected,
    }
    out["plan"] = {**results[0]["plan"], "combined_from": len(results)}
    return out


def _sum_tables(tables: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in tables:
        out = stats.add_counters(out, table)
    return out


# -- HTML ------------------------------------------------------------------------------------

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#1f2328}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #d0d7de;padding:4px 10px;
text-align:right}th:first-child,td:first-child{text-align:left}h1{font-size:22px}
h2{font-size:17px;margin-top:28px}.bad{color:#d1242f;font-weight:600}.ok{color:#1a7f37}
figure{margin:12px 0}img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#59636e}"""


def write_report(result: dict[str, Any], path: Path) -> None:
    path.write_text(render([("run", result)], title=f"rtcore loadtest: {result['scenario']}"))
    print(f"report: {path}", file=sys.stderr)


def render(runs: list[tuple[str, dict[str, Any]]], title: str) -> str:
    """A self-contained HTML page: the summary tables, then every chart."""
    from rtcore.loadtest import plots  # matplotlib: only when drawing

    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style><h1>{html.escape(title)}</h1>",
    ]
    parts.append(_verdicts(runs))
    parts.append(
        _table(
            ["", *(label for label, _ in runs), *(["after / before"] * (len(runs) == 2))],
            summary_rows(runs),
        )
    )
    parts.append("<h2>Refusals and closes by code</h2>")
    parts.append(_table(["", *(label for label, _ in runs)], code_rows(runs)))
    for chart_id, draw in plots.CHARTS:
        png = base64.b64encode(draw(runs)).decode("ascii")
        parts.append(
            f'<figure><img id="{chart_id}" alt="{chart_id}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(CAPTIONS[chart_id])}</figcaption></figure>"
        )
    parts.append(
        f"<p><small>generated {time.strftime('%Y-%m-%d %H:%M:%S')}; how to read it: "
        "docs/loadtest.md</small></p>"
    )
    return "\n".join(parts)


CAPTIONS = {
    "connections": "Open connections (line) and connections that became ready in each second "
    "(bars). A ramp that flattens below the target, or drops, is refusals or closes: see the "
    "last chart.",
    "deliveries": "Messages (churn: presence events) received by the load clients each second, "
    "and messages sent. Deliveries should follow sends times the audience.",
    "latency-over-time": "Send-to-delivery latency of each second's deliveries, p50 and p99 "
    "(wall clocks: across machines, only as good as their time sync).",
    "latency-distribution": "Share of all deliveries at or below each latency; the right-hand "
    "tail is the p99 and beyond.",
    "refusals": "Connections refused during setup (close code, HTTP status, err code, tcp) and "
    "established connections the server closed later, by code (protocol.md §6, §7).",
}


def _verdicts(runs: list[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for label, r in runs:
        d = r["deliveries"]
        ok = d["complete"] and not r["timed_out"]
        state = "complete" if ok else ("TIMED OUT" if r["timed_out"] else "INCOMPLETE")
        lines.append(
            f'<p>{html.escape(label)}: <span class="{"ok" if ok else "bad"}">{state}</span> — '
            f"{d['received']:,} of {d['expected']:,} deliveries owed were counted; "
            f"{r['connections']['opened']:,} of {r['connections']['planned']:,} connections "
            f"opened; targets {html.escape(', '.join(r['plan']['targets']))}</p>"
        )
    return "".join(lines)


def summary_rows(runs: list[tuple[str, dict[str, Any]]]) -> Rows:
    """(name, value per run) for the summary table; with two runs, the ratio after/before."""
    getters: list[tuple[str, Any]] = [
        ("scenario", lambda r: r["scenario"]),
        ("machines × load processes", lambda r: f"{r['machines']} × {r['workers']}"),
        ("connections planned", lambda r: r["connections"]["planned"]),
        ("connections opened", lambda r: r["connections"]["opened"]),
        ("connections refused", lambda r: r["connections"]["refused"]),
        ("setup, s", lambda r: r["phases"].get("setup")),
        ("run, s", lambda r: r["phases"].get("run")),
        ("messages sent", lambda r: r["messages"]["sent"]),
        ("messages acked", lambda r: r["messages"]["acked"]),
        ("deliveries received", lambda r: r["deliveries"]["received"]),
        ("deliveries owed", lambda r: r["deliveries"]["expected"]),
        ("peak deliveries/s", lambda r: max((x["deliveries"] for x in r["series"]), default=0)),
        *[(f"latency {p}, ms", _latency(p)) for p in ("p50", "p90", "p99", "p999", "max")],
        ("latency samples", lambda r: r["latency"]["samples"]),
    ]
    rows: Rows = []
    for name, get in getters:
        values = [get(r) for _, r in runs]
        if len(runs) == 2:
            values.append(ratio(values[0], values[1]))
        rows.append((name, values))
    return rows


def _latency(name: str) -> Any:
    return lambda r: r["latency"][name]


def ratio(before: Any, after: Any) -> str:
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return "—"
    if before == 0:
        return "—" if after == 0 else "∞"
    return f"{after / before:.2f}×"


def code_rows(runs: list[tuple[str, dict[str, Any]]]) -> Rows:
    keys = sorted(
        {("refused", k) for _, r in runs for k in r["refusals"]}
        | {("closed", k) for _, r in runs for k in r["closes"]}
    )
    if not keys:
        return [("none", ["—" for _ in runs])]
    table = {"refused": "refusals", "closed": "closes"}
    return [
        (f"{kind}: {code}", [r[table[kind]].get(code, 0) for _, r in runs]) for kind, code in keys
    ]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(header: list[str], rows: Rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>{''.join(f'<td>{_cell(v)}</td>' for v in values)}</tr>"
        for name, values in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# -- the subcommands -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtcore loadtest")
    sub = parser.add_subparsers(dest="tool", required=True)
    c = sub.add_parser("combine", help="add up results of one run on several machines")
    c.add_argument("results", nargs="+")
    c.add_argument("--json", required=True, help="the combined result")
    c.add_argument("--html", help="also its report")
    r = sub.add_parser("report", help="draw a result's HTML report")
    r.add_argument("result")
    r.add_argument("--html", required=True)
    k = sub.add_parser("compare", help="two results side by side, with ratios after/before")
    k.add_argument("before")
    k.add_argument("after")
    k.add_argument("--html", required=True)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.tool == "combine":
            result = combine([load(path) for path in args.results])
            Path(args.json).write_text(json.dumps(result, indent=1))
            if args.html:
                write_report(result, Path(args.html))
        elif args.tool == "report":
            write_report(load(args.result), Path(args.html))
        else:
            runs = [
                (f"before ({args.before})", load(args.before)),
                (f"after ({args.after})", load(args.after)),
            ]
            Path(args.html).write_text(render(runs, title="rtcore loadtest: comparison"))
    except ResultError as exc:
        print(f"rtcore loadtest: {exc}", file=sys.stderr)
        return 2
    return 0
