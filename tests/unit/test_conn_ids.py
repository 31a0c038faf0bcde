"""Connection ids (rtcore/server/ids.py): random, URL-safe, 12 characters, drawn in batches."""

from __future__ import annotations

import base64
import re

import pytest

from rtcore.server import ids
from rtcore.server.ids import BATCH, ConnectionIds


def test_ids_are_12_url_safe_characters_of_9_random_bytes() -> None:
    source = ConnectionIds()
    for _ in range(2 * BATCH + 3):  # across batch boundaries
        conn_id = source.new()
        assert re.fullmatch(r"[A-Za-z0-9_-]{12}", conn_id)
        assert len(base64.urlsafe_b64decode(conn_id)) == 9


def test_ids_do_not_repeat_within_or_across_batches() -> None:
    source = ConnectionIds()
    drawn = [source.new() for _ in range(3 * BATCH + 7)]
    assert len(set(drawn)) == len(drawn)


def test_each_id_is_its_own_9_bytes_of_the_random_source(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    counter = iter(range(1, 1_000_000))

    def urandom(n: int) -> bytes:
        calls.append(n)
        return b"".join(next(counter).to_bytes(9, "big") for _ in range(n // 9))

    monkeypatch.setattr(ids.os, "urandom", urandom)
    source = ConnectionIds()
    first = [source.new() for _ in range(BATCH)]
    assert calls == [9 * BATCH]  # one system call for a whole batch
    assert [int.from_bytes(base64.urlsafe_b64decode(i), "big") for i in first] == list(
        range(1, BATCH + 1)
    )
    nxt = source.new()
    assert calls == [9 * BATCH, 9 * BATCH]
    assert int.from_bytes(base64.urlsafe_b64decode(nxt), "big") == BATCH + 1
