"""Position: a place in a channel's stream, an epoch and an offset (protocol.md §5.5)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Position:
    """A place in a channel's stream: the epoch and the offset of a message (0: before the
    first)."""

    epoch: str
    offset: int

    def to_wire(self) -> dict[str, object]:
        return {"epoch": self.epoch, "offset": self.offset}
