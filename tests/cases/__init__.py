"""Tables of cases shared by two implementations of one rule (Python and Lua), each run
against both: ``bucket_cases.json`` (the token bucket) and ``history_expiry_cases.json``
(when a history message expires)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> list[dict[str, Any]]:
    """The cases of ``<name>.json``."""
    cases: list[dict[str, Any]] = json.loads((HERE / f"{name}.json").read_text())["cases"]
    return cases


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


BUCKET_CASES = load("bucket_cases")
HISTORY_EXPIRY_CASES = load("history_expiry_cases")
