"""The coordinator: starts the load processes (``agent``), takes the run through its phases
(setup, the scenario's action, stop), shows progress, and builds the JSON result.

Phases: every process opens its connections (at the plan's ramp rate) until each is up or
refused; then ``connect`` holds them, ``fanout``/``chat``/``churn`` send until every
message sent was acked (or refused) and every delivery owed arrived, and ``storm`` drops
every connection and waits until all are back. The plan's ``duration`` bounds the whole run.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from rtcore.loadtest import plan as p
from rtcore.loadtest import stats
from rtcore.loadtest.agent import agent_main
from rtcore.loadtest.progress import Progress

CTX = mp.get_context("fork")
LINGER = 0.3
"""Seconds to go on reading once every delivery owed arrived: a duplicate would show."""
FORMAT = "rtcore-loadtest/1"


class LoadError(Exception):
    """A load process failed (not the server: what the server does is counted)."""


class Run:
    def __init__(self, plan: p.Plan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.t0 = time.time()
        self.start = time.monotonic()
        self.deadline = self.start + plan.duration
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        self.latest: dict[int, dict[str, Any]] = {}
        self.finals: dict[int, dict[str, Any]] = {}
        self.phase = "setup"
        self.marks: dict[str, float] = {}
        self.timed_out = False

    def execute(self) -> dict[str, Any]:
        for worker in range(self.plan.workers):
            parent, child = CTX.Pipe()
            proc = CTX.Process(target=agent_main, args=(self.plan, worker, self.t0, child))
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        try:
            self._phases()
        finally:
            self._stop()
        return self.result()

    def _phases(self) -> None:
        self._until(lambda t: all(s["settled"] for s in self.latest.values()), full=True)
        self.marks["setup"] = time.monotonic() - self.start
        scenario = self.plan.scenario
        if scenario == "connect":
            hold = time.monotonic() + self.plan.hold
            self.phase = "hold"
            self._until(lambda t: time.monotonic() >= hold)
        elif scenario == "storm":
            self._tell("storm")
            self.phase = "storm"
            storm_start = time.monotonic()
            self._until(lambda t: t["phases"] == ["storm"] and t["open"] == len(self.plan.conns))
            self.marks["recovery"] = time.monotonic() - storm_start
        else:
            self._tell("go")
            self.phase = "sending"
            self._until(self._all_delivered)
            self._linger()
        self.marks["run"] = time.monotonic() - self.start

    def _all_delivered(self, total: dict[str, Any]) -> bool:
        if not total["sends_done"]:
            return False
        owed = p.expected_deliveries(self.plan.scenario, total["acked_in"], total["ready_in"])
        return received(self.plan.scenario, total["counts"]) >= owed

    def _linger(self) -> None:
        end = time.monotonic() + LINGER
        self._until(lambda t: time.monotonic() >= end)

    def _tell(self, command: str) -> None:
        for pipe in self.pipes:
            pipe.send(command)

    def _until(self, done: Callable[[dict[str, Any]], bool], full: bool = False) -> None:
        """Read reports until ``done(aggregate)`` (with a report from every process when
        ``full``) or the deadline."""
        while time.monotonic() < self.deadline:
            self._read(0.1)
            if len(self.latest) == len(self.pipes):
                total = aggregate(list(self.latest.values()))
                elapsed = time.monotonic() - self.start
                self.progress.update(self.phase, elapsed, total, len(self.plan.conns))
                if done(total):
                    return
        self.timed_out = True

    def _read(self, timeout: float) -> None:
        for pipe in wait(self.pipes, timeout):
            assert isinstance(pipe, Connection)
            worker = self.pipes.index(pipe)
            try:
                kind, value = pipe.recv()
            except EOFError:
                if worker not in self.finals:
                    raise LoadError(f"load process {worker} exited without its result") from None
                continue
            if kind == "error":
                raise LoadError(f"load process {worker} failed: {value}")
            (self.finals if kind == "final" else self.latest)[worker] = value

    def _stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send("stop")
            except (BrokenPipeError, OSError):
                pass
        bound = time.monotonic() + 15.0
        while len(self.finals) < len(self.pipes) and time.monotonic() < bound:
            self._read(0.2)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    def result(self) -> dict[str, Any]:
        if len(self.finals) < len(self.pipes):
            raise LoadError("not every load process reported its result")
        finals = list(self.finals.values())
        return build_result(self.plan, finals, self.t0, self.marks, self.timed_out)


def received(scenario: str, counts: dict[str, int]) -> int:
    """What a scenario counts as delivered: presence events for churn, messages otherwise."""
    return counts.get("presence" if scenario == "churn" else "deliveries", 0)


def aggregate(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The load processes' latest reports, added up."""
    total: dict[str, Any] = {"open": 0, "opened": 0, "failed": 0, "connections": 0}
    for key in total:
        total[key] = sum(s[key] for s in snapshots)
    for key in ("counts", "refusals", "closes", "ready_in", "acked_in"):
        summed: Counter[str] = Counter()
        for s in snapshots:
            summed.update(s[key])
        total[key] = dict(summed)
    total["recent"] = {}
    for s in snapshots:
        stats.merge_hist(total["recent"], s["recent"])
    total["phases"] = sorted({s["phase"] for s in snapshots})
    total["settled"] = all(s["settled"] for s in snapshots)
    total["sends_done"] = all(s["sends_done"] for s in snapshots)
    return total


def build_result(
    plan: p.Plan,
    finals: list[dict[str, Any]],
    t0: float,
    marks: dict[str, float],
    timed_out: bool,
) -> dict[str, Any]:
    """The JSON result (docs/loadtest.md describes every field)."""
    total = aggregate(finals)
    series = stats.merge_series(f["series"] for f in finals)
    hist: dict[int, int] = {}
    for row in series:
        stats.merge_hist(hist, row["latency"])
    counts = total["counts"]
    owed = p.expected_deliveries(plan.scenario, total["acked_in"], total["ready_in"])
    got = received(plan.scenario, counts)
    return {
        "format": FORMAT,
        "scenario": plan.scenario,
        "started": t0,
        "machines": 1,
        "workers": plan.workers,
        "plan": plan_summary(plan),
        "timed_out": timed_out,
        "phases": {k: round(v, 3) for k, v in marks.items()},
        **_tables(plan, total),
        "deliveries": {"received": got, "expected": owed, "complete": got == owed},
        "refusals": total["refusals"],
        "closes": total["closes"],
        "latency": {**stats.summary(hist), "histogram": {str(k): v for k, v in hist.items()}},
        "series": series,
    }


def _tables(plan: p.Plan, total: dict[str, Any]) -> dict[str, Any]:
    counts = total["counts"]
    return {
        "connections": {
            "planned": len(plan.conns),
            "opened": total["opened"],
            "open_at_end": total["open"],
            "refused": total["failed"],
        },
        "messages": {
            "sent": counts.get("sent", 0),
            "acked": counts.get("acked", 0),
            "refused": counts.get("refused_requests", 0),
        },
    }


def plan_summary(plan: p.Plan) -> dict[str, Any]:
    """The plan as the result records it (never the tokens or the key)."""
    return {
        "targets": [f"{t.host_header}{t.path} ({t.host}:{t.port})" for t in plan.targets],
        "connections": len(plan.conns),
        "app": plan.hello.get("app"),
        "presence_diffs": "features" in plan.hello,
        "tokens": len(plan.tokens),
        "connect_rate": plan.connect_rate,
        "rate": plan.rate,
        "messages": plan.messages,
        "size": plan.size,
        "hold": plan.hold,
        "duration": plan.duration,
    }
