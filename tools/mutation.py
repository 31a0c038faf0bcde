"""Mutation testing of the sans-IO core and the Redis protocol: ``python -m tools.mutation``.

Runs mutmut (``pip install -c constraints.txt -e '.[test,mutation]'``) over the modules that
``[tool.mutmut] only_mutate`` in pyproject.toml lists, with the fast unit tests listed there,
then writes each module's score and its surviving mutants to docs/mutation.md. mutmut keeps its
results in ``mutants/`` (not committed), so a second run only tests what changed.

    python -m tools.mutation                      # what is new or changed since the last run
    python -m tools.mutation --module rtcore.core.history   # that module's mutants, all again
    python -m tools.mutation --recheck-alive      # the mutants alive last time (new tests?)
    python -m tools.mutation --report-only        # the report from the last results
    mutmut show rtcore.core.history.x_page__mutmut_3   # one mutant's diff

It is CPU-heavy (minutes per module): it runs under ``nice -n 10`` with ``--jobs`` workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "mutation.md"
TARGET = 90.0
"""The score every listed module keeps (issue 20)."""

DETECTED = {1, 3, 36, 24, -24, 152, 255, -11, -9}
"""mutmut's exit codes of a mutant the tests caught: failed, errored, timed out, crashed."""
NOT_COUNTED = {None, 34, 37}
"""Not checked (yet), skipped, caught by a type checker (none is configured)."""


def listed_modules() -> list[str]:
    """The dotted names of ``[tool.mutmut] only_mutate``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [p.removesuffix(".py").replace("/", ".") for p in config["only_mutate"]]


def run(names: Sequence[str], jobs: int) -> int:
    """``mutmut run``: mutants named (or matched by a glob) are run again; without names,
    only those without a result (new, or of code that changed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut sets the path
    mutmut = Path(sys.executable).with_name("mutmut")
    command = ["nice", "-n", "10", str(mutmut), "run", "--max-children", str(jobs), *names]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def alive(modules: Iterable[str]) -> list[str]:
    """The mutants of ``modules`` that no test caught in the last results."""
    return [
        name
        for module in modules
        for name, code in results(module).items()
        if code not in NOT_COUNTED and code not in DETECTED
    ]


def results(module: str) -> dict[str, int | None]:
    """Mutant name -> mutmut's exit code for it, from ``mutants/<module path>.py.meta``."""
    meta = ROOT / "mutants" / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def report(modules: Iterable[str]) -> str:
    rows, survivors = [], []
    for module in modules:
        codes = results(module)
        counted = {name: code for name, code in codes.items() if code not in NOT_COUNTED}
        caught = sum(code in DETECTED for code in counted.values())
        alive = sorted((n for n, c in counted.items() if c not in DETECTED), key=_natural)
        unchecked = len(codes) - len(counted)
        score = 100.0 * caught / len(counted) if counted else 0.0
        mark = "ok" if counted and score >= TARGET else "**below target**"
        rows.append(
            f"| `{module}` | {len(codes)} | {caught} | {len(alive)} | {unchecked} | "
            f"{score:.1f}% | {mark} |"
        )
        survivors += [f"- `{name}`" for name in alive]
    return "\n".join(
        [
            "# Mutation scores",
            "",
            "Written by `python -m tools.mutation` (mutmut, with the fast unit tests that",
            "pyproject.toml's `[tool.mutmut]` lists); do not edit by hand. A mutant is *caught*",
            "when a test fails (or times out) with it; the score is caught / checked. Every",
            f"module keeps {TARGET:.0f}% or more. `mutmut show <name>` shows a mutant's change.",
            "",
            "| module | mutants | caught | alive | not checked | score | |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
            "## Mutants alive",
            "",
            "Each is a change of the code that no test noticed: either a test is missing, or the",
            "change does not alter behaviour (an equivalent mutant, such as a message's wording",
            "or a default that is always passed).",
            "",
            *(survivors or ["None."]),
            "",
        ]
    )


def _natural(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("_")
    return head, int(number) if number.isdigit() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__)
    parser.add_argument("--module", action="append", help="a listed module (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel mutmut workers")
    parser.add_argument("--recheck-alive", action="store_true", help="run the alive ones again")
    parser.add_argument("--report-only", action="store_true", help="do not run mutmut")
    args = parser.parse_args(argv)
    modules = listed_modules()
    unknown = set(args.module or ()) - set(modules)
    if unknown:
        parser.error(f"not in [tool.mutmut] only_mutate: {', '.join(sorted(unknown))}")
    if args.recheck_alive:
        names = alive(args.module or modules)
        if names:
            run(names, args.jobs)
    elif not args.report_only:
        run([f"{m}.*" for m in args.module or ()], args.jobs)
    REPORT.write_text(report(modules))
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
