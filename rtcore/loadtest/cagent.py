"""The C load agent (``csrc/cagent.c``) as a load process: the same pipe protocol with the
coordinator as ``agent.agent_main``, the connections in C.

The process writes its share of the plan to the C agent's stdin, forwards the coordinator's
commands (``go``, ``storm``, ``stop``) there, and translates the agent's report lines (JSON,
channels by index) into the ``tick`` and ``final`` reports the Python agent sends, so the
coordinator cannot tell them apart. The C agent runs ``connect``, ``fanout``, ``chat`` and
``storm``; ``churn`` (presence events of churners) stays with the Python agent.
"""

from __future__ import annotations

import json
import subprocess
from collections import deque
from multiprocessing.connection import Connection
from typing import IO, Any

from rtcore.loadtest import native, stats, wire
from rtcore.loadtest import plan as p
from rtcore.loadtest.peer import hello_frame

SCENARIOS = ("connect", "fanout", "chat", "storm")
"""What the C agent runs; the others run on the Python agent."""
AGENTS = ("auto", "c", "python")
RECENT = 5
"""Reports (0.2 s each) whose latencies make the live percentiles: the last second's."""
ROLES = {"member": "m", "publisher": "p", "sender": "s"}


class AgentChoiceError(Exception):
    """``--agent c`` where the C agent cannot run: the message says why."""


def choose(wanted: str, scenario: str) -> str:
    """The agent a run uses: ``c`` or ``python``. ``auto`` takes the C agent where it runs
    the scenario and a C compiler built it, else the Python one."""
    if wanted == "python":
        return "python"
    if scenario not in SCENARIOS:
        if wanted == "c":
            raise AgentChoiceError(
                f"--agent c: the C agent runs {', '.join(SCENARIOS)}; {scenario} runs on the "
                "Python agent (--agent python or auto)"
            )
        return "python"
    if native.build("cagent"):
        return "c"
    if wanted == "c":
        raise AgentChoiceError("--agent c: the C agent did not build (is there a cc?)")
    return "python"


def plan_text(plan: p.Plan, worker: int, t0: float) -> str:
    """The load process's share of ``plan``, in the C agent's input format (csrc/cagent.c)."""
    names = sorted({ch for conn in plan.conns for ch in conn.channels})
    index = {name: k for k, name in enumerate(names)}
    rate = plan.connect_rate / plan.workers
    lines = [
        f"plan {plan.scenario} {t0!r} {plan.duration!r} {rate!r} {float(plan.rate)!r} "
        f"{plan.messages} {plan.size} {worker}"
    ]
    for t in plan.targets:
        upgrade = wire.upgrade_request(t.host_header, t.path)
        lines.append(f"target {t.host} {t.port} {upgrade.hex()}")
    for token in plan.tokens or (None,):
        lines.append(f"hello {hello_frame(plan.hello, token).hex()}")
    lines.extend(f"channel {name}" for name in names)
    for conn in plan.share(worker):
        channels = ",".join(str(index[ch]) for ch in conn.channels) or "-"
        lines.append(f"conn {conn.index} {conn.target} {ROLES[conn.role]} {channels}")
    lines.append("end")
    return "\n".join(lines) + "\n"


class Reports:
    """The C agent's report lines, as the Python agent's reports."""

    def __init__(self, plan: p.Plan) -> None:
        self.names = sorted({ch for conn in plan.conns for ch in conn.channels})
        self.recent: deque[dict[str, int]] = deque(maxlen=RECENT)

    def translate(self, report: dict[str, Any]) -> dict[str, Any]:
        out = dict(report)
        del out["kind"]
        for key in ("ready_in", "acked_in"):
            out[key] = {self.names[int(k)]: v for k, v in report[key].items()}
        self.recent.append(report["recent"])
        window: dict[int, int] = {}
        for hist in self.recent:
            stats.merge_hist(window, hist)
        out["recent"] = window
        return out


def c_agent_main(plan: p.Plan, worker: int, t0: float, pipe: Connection) -> None:
    """A load process's entry point (multiprocessing), running the C agent."""
    proc: subprocess.Popen[str] | None = None
    try:
        binary = native.binary_path("cagent")
        proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(plan_text(plan, worker, t0))
        proc.stdin.flush()
        _relay(Reports(plan), proc.stdout, proc.stdin, pipe)
    except Exception as exc:  # report, so the coordinator can say what failed
        pipe.send(("error", f"C agent: {type(exc).__name__}: {exc}"))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        pipe.close()


def _relay(reports: Reports, out: IO[str], into: IO[str], pipe: Connection) -> None:
    """Reports to the coordinator, commands to the C agent, until its final report."""
    while True:
        line = out.readline()
        if not line:
            raise RuntimeError("the C agent exited without its result")
        report = json.loads(line)
        if report["kind"] == "error":
            raise RuntimeError(report["message"])
        kind = "final" if report["kind"] == "final" else "tick"
        translated = reports.translate(report)
        if kind == "final":  # the C agent's CPU, and this relay's
            translated["cpu"] = report["cpu"] + stats.cpu_seconds()
        pipe.send((kind, translated))
        if kind == "final":
            return
        while pipe.poll():
            into.write(f"{pipe.recv()}\n")
            into.flush()
