"""Close: the connection must end with this code and reason (protocol.md §7)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Close:
    """The connection must be closed with this code and reason."""

    code: int
    reason: str
