"""One module per scenario of ``python -m bench``: each adds its subcommand to the parser
(``add_parser``) and runs it from the parsed arguments (``command``); the shared parts are
``bench.harness`` (processes, fleets) and ``bench.tables`` (tables, medians, checks)."""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
