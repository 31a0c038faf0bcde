"""The comparison servers of ``python -m bench`` (issue 22): peers, not baselines of rtcore's
own making, run in the same invocation so that every figure is a ratio.

- ``node-ws``: ``bench/peers/ws_server.mjs``, a Node server on the ``ws`` package (with
  ``@msgpack/msgpack``), both from ``clients/js/node_modules`` (``npm ci`` in clients/js).
- ``c-ceiling``: ``bench/peers/cserver.c``, a single-threaded epoll server in C with no work
  per request beyond what the protocol needs: the machine's limit. Compiled with ``cc -O2`` on
  first use into the C load clients' cache directory (``rtcore.loadtest.native.cache_dir``).

Both speak the subset of protocol.md the load clients use (upgrade, hello, join, leave, send
and its ``msg``), without presence. Each prints ``PORT <n>`` once listening, like
``bench.servers``; ``ServerProc`` starts them directly, so /proc's CPU and RSS are theirs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from rtcore.loadtest.native import cache_dir

HERE = Path(__file__).resolve().parent
JS = HERE.parent.parent / "clients" / "js"
NODE_PACKAGES = ("ws", "@msgpack/msgpack")
PEERS = ("node-ws", "c-ceiling")
NODE_BASELINE = "node-ws"
CEILING = "c-ceiling"


def is_peer(kind: str) -> bool:
    return kind.removesuffix(" pipelined") in PEERS


@functools.cache
def problem(kind: str) -> str | None:
    """Why the peer ``kind`` cannot run on this machine (one line), or None."""
    if kind == "node-ws":
        return _node_problem()
    if kind == "c-ceiling":
        return _build_cserver()
    raise ValueError(f"not a peer: {kind}")


def _node_problem() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed (the node-ws peer needs Node >= 18)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < 18:
        return f"node {version.strip() or '(no version)'} is older than 18 (node-ws needs 18+)"
    for package in NODE_PACKAGES:
        if not (JS / "node_modules" / package / "package.json").is_file():
            return f"clients/js/node_modules has no {package}: run `npm ci` in clients/js"
    return None


def cserver_binary() -> Path:
    """Named after a hash of the source, as rtcore.loadtest.native names its clients."""
    digest = hashlib.sha256((HERE / "cserver.c").read_bytes()).hexdigest()[:12]
    return cache_dir() / f"cserver-{digest}"


def _build_cserver() -> str | None:
    """Compile cserver.c unless this source's build is there; the reason it could not, or
    None."""
    source, binary = HERE / "cserver.c", cserver_binary()
    if binary.exists():
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"cserver.{os.getpid()}.tmp")
    try:
        subprocess.run(
            ["cc", "-O2", "-o", str(partial), str(source)], check=True, capture_output=True
        )
    except OSError as exc:
        return f"no C compiler to build bench/peers/cserver.c ({exc})"
    except subprocess.CalledProcessError as exc:
        return f"cc failed on bench/peers/cserver.c: {exc.stderr.decode(errors='replace')[-300:]}"
    os.replace(partial, binary)  # atomic: parallel builds never run a half-written file
    return None


def command(kind: str, host: str = "127.0.0.1", port: int = 0) -> list[str]:
    """The argv that starts the peer ``kind`` (it must have no ``problem``)."""
    why = problem(kind)
    if why is not None:
        raise SystemExit(f"python -m bench: {kind}: {why}")
    if kind == "node-ws":
        node = shutil.which("node")
        assert node is not None
        return [node, str(HERE / "ws_server.mjs"), "--host", host, "--port", str(port)]
    return [str(cserver_binary()), host, str(port)]


def usable(kinds: list[str], skip: bool) -> list[str]:
    """``kinds`` without the peers that cannot run here: each one said in a line, as
    ``SKIPPED`` (``skip``: smoke and all go on without it), else as the exit's message."""
    out = []
    for kind in kinds:
        why = problem(kind.removesuffix(" pipelined")) if is_peer(kind) else None
        if why is None:
            out.append(kind)
        elif skip:
            print(f"{kind}: SKIPPED ({why})")
        else:
            raise SystemExit(f"python -m bench: {kind}: {why}")
    return out
