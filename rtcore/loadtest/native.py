"""The C load clients (``csrc/csub.c``, ``csrc/cstorm.c``, and ``rtcore loadtest``'s C agent
``csrc/cagent.c``, shipped as package data), compiled on demand with the system's ``cc`` into
a cache directory, and bench's Python drivers of the first two (``cagent`` drives the third).

``python -m bench`` drives them for its subscribers (``CSubscriber``) and its reconnect storm
(``CStorm``); where there is no compiler, ``build`` says so and the Python load side
(``rtcore.loadtest.counting``) is used instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from rtcore.loadtest import wire


def cache_dir() -> Path:
    """Where the compiled clients go: ``$RTCORE_LOADTEST_BUILD``, else the user's cache."""
    explicit = os.environ.get("RTCORE_LOADTEST_BUILD")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtcore" / "loadtest"


def binary_path(name: str) -> Path:
    """The compiled client ``name``, named after a hash of its source: trees with different
    sources (branches, versions) never run each other's build, whatever the files' mtimes."""
    source = resources.files("rtcore.loadtest").joinpath("csrc", f"{name}.c")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    return cache_dir() / f"{name}-{digest}"


def build(name: str = "csub") -> bool:
    """Compile the C client ``name`` (csub, cstorm or cagent) unless this source's build is
    there; False, with a note on stderr, when there is no C compiler (or it failed)."""
    source = resources.files("rtcore.loadtest").joinpath("csrc", f"{name}.c")
    binary = binary_path(name)
    if binary.exists():
        return True
    with resources.as_file(source) as src:
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"{name}.{os.getpid()}.tmp")
        try:
            subprocess.run(
                ["cc", "-O2", "-o", str(partial), str(src), "-lm"], check=True, capture_output=True
            )
            os.replace(partial, binary)  # atomic: parallel builds never run a half-written file
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"note: no C load client {name} ({exc}); using the Python one", file=sys.stderr)
            return False
    return True


class CSubscriber:
    """csub driven over stdin/stdout, with ``bench.harness.LoadProc``'s interface."""

    def __init__(
        self,
        address: tuple[str, int],
        n: int,
        channel: str | None,
        features: tuple[str, ...] = (),
        pipeline: bool = False,
    ) -> None:
        hello: dict[str, Any] = {"features": list(features)} if features else {}
        first = wire.request(t="hello", v=1, echo=False, **hello)
        if channel:
            first += wire.request(t="join", id=1, ch=channel)
        args = [str(binary_path("csub")), address[0], str(address[1]), str(n), first.hex()]
        self.proc = subprocess.Popen(
            [*args, *(["pipeline"] * pipeline)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pending: str | None = "ready"

    def call(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        if cmd == "count":
            line = f"count {args['expected']} {args['timeout']} {args.get('sample_every', 0)}"
        else:
            line = cmd
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.pending = cmd

    def result(self, timeout: float = 600.0) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] == "error":
            raise RuntimeError(f"C subscriber failed: {' '.join(line) or 'exited'}")
        if line[0] == "ready":
            return float(line[1])
        if line[0] == "quiet":
            return int(line[1])
        total, first, last, closed, minpeer, nsamples = line[1:]
        pairs = [self.proc.stdout.readline().split() for _ in range(int(nsamples))]
        latencies = [float(lat) for lat, _ in pairs]
        return {
            "total": int(total),
            "first": float(first),
            "last": float(last),
            "closed": int(closed),
            "min_per_peer": int(minpeer),
            "latencies": latencies,
            "sampled_at": [float(when) for _, when in pairs],
        }

    def stop(self) -> None:
        try:
            self.call("quit")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class CStorm:
    """cstorm: N clients that reconnect with the Python client's jittered backoff."""

    def __init__(self, address: tuple[str, int], n: int, ips: int) -> None:
        first = wire.request(t="hello", v=1, echo=False, features=["presence_diffs"])
        first += wire.request(t="join", id=1, ch="storm")
        args = [str(binary_path("cstorm")), address[0], str(address[1]), str(n), first.hex()]
        self.proc = subprocess.Popen(
            [*args, str(ips)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def line(self) -> list[str]:
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if not words or words[0] == "error":
            raise RuntimeError(f"cstorm failed: {' '.join(words) or 'exited'}")
        return words

    def storm(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("storm\n")
        self.proc.stdin.flush()

    def recovered(self) -> tuple[float, dict[str, int]]:
        seconds = float(self.line()[1])
        refusals: dict[str, int] = {}
        while (words := self.line())[0] != "end":
            refusals[words[1]] = int(words[2])
        return seconds, refusals

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
