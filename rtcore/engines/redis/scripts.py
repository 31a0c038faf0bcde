"""The Redis engine's Lua scripts: ``lua/*.lua``, package data, loaded with importlib.resources.

A script is the concatenation of its parts (:data:`PARTS`): the shared ones define Lua
functions (``clock``: the Redis clock; ``presence``: pruning dead nodes' members;
``history``: stream identity and expiry; ``bucket``: the token bucket), the last one is the
script's body. Each file opens with what it takes (KEYS, ARGV) and returns.
"""

from __future__ import annotations

import functools
from importlib import resources

_PACKAGE = __name__.rpartition(".")[0]

PARTS: dict[str, tuple[str, ...]] = {
    "JOIN": ("clock", "presence", "join"),
    "LEAVE": ("clock", "presence", "leave"),
    "UPDATE": ("clock", "presence", "update"),
    "REFRESH": ("clock", "presence", "refresh"),
    "SYNC": ("clock", "presence", "sync"),
    "MEMBERS": ("clock", "presence", "members"),
    "TAKE": ("bucket", "take"),
    "HISTORY_PUBLISH": ("clock", "history", "history_publish"),
    "HISTORY_READ": ("clock", "history", "history_read"),
}
"""Every script the broker registers, by name: the ``lua/`` files it is made of, in order."""


@functools.cache
def part(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return (resources.files(_PACKAGE) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def source(script: str) -> str:
    """The Lua source of the script ``script`` (a key of :data:`PARTS`)."""
    return "".join(part(name) for name in PARTS[script])
