"""Connection ids: 72 random bits each, as ``secrets.token_urlsafe(9)`` makes them, drawn from
the OS's random source in batches.

``token_urlsafe`` costs a ``getrandom`` call and a base64 encoding per id (~1.5% of a
connection's setup under a connection storm, bench/RESULTS.md "Cheaper connection setup").
Nine random bytes are exactly twelve base64 characters with no padding, so one batch of
``9 × BATCH`` bytes encodes at once into ``BATCH`` ids, each a 12-character slice: the same
alphabet, length and randomness as ``token_urlsafe(9)``, one system call per batch.
"""

from __future__ import annotations

import base64
import os

ID_BYTES = 9
"""Random bytes per id (72 bits; base64 makes 12 characters of them, no padding)."""
ID_CHARS = ID_BYTES * 4 // 3
BATCH = 256
"""Ids drawn per call to the OS's random source."""


class ConnectionIds:
    """Hands out connection ids: unpredictable, URL-safe, 12 characters."""

    __slots__ = ("_batch", "_next")

    def __init__(self) -> None:
        self._batch = ""
        self._next = 0

    def new(self) -> str:
        """A fresh random id (the caller checks it is not in use: collisions are 2^-72)."""
        if self._next >= len(self._batch):
            self._batch = base64.urlsafe_b64encode(os.urandom(ID_BYTES * BATCH)).decode("ascii")
            self._next = 0
        start = self._next
        self._next = start + ID_CHARS
        return self._batch[start : self._next]
