"""History's memory is what it counts (issue 20, finding 1): it held each message's decoded
value (60,000 empty arrays: ~3.5 MB for 60 KB framed) while counting only the framed bytes,
and each ``history`` read of a never-used channel created a stream."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from rtcore.core.history import (
    ENTRY_OVERHEAD,
    STREAM_OVERHEAD,
    MemoryHistory,
    Retention,
)
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position

NOW = 1_800_000_000.0
KEEP = Retention(size=1000, ttl=60.0)


def growth(run: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``run`` (what it retains), and its result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, result
    finally:
        tracemalloc.stop()


def test_stored_messages_hold_their_framed_bytes_not_their_decoded_values() -> None:
    store = MemoryHistory(max_bytes=4 * 1024 * 1024)

    def publish() -> None:
        for i in range(100):
            data = list(range(100)) * 600  # 60 KB as msgpack, ~480 KB as a list of ints
            store.publish("app", "feed", f.Msg("feed", "e", data, None, 0, f"m{i}"), KEEP, NOW)

    held, _ = growth(publish)
    assert store.bytes <= store.max_bytes
    assert held <= store.bytes + 64 * 1024, (held, store.bytes)  # counted is what is held
    page = store.read("app", "feed", since=None, limit=1, reverse=True, wall=NOW)
    assert page.entries[0].msg.data == list(range(100)) * 600  # decoded when read


def test_reading_never_used_channels_creates_no_stream() -> None:
    store = MemoryHistory(max_bytes=8 * 1024 * 1024)

    def read() -> set[Position]:
        return {
            store.read("app", f"c{i}", since=None, limit=100, reverse=False, wall=NOW).top
            for i in range(20_000)
        }

    held, tops = growth(read)
    assert len(store) == 0 and store.bytes == 0
    assert held < 64 * 1024, held
    assert len(tops) == 1 and next(iter(tops)).offset == 0  # one unused epoch, top 0


def test_an_empty_channel_read_then_published_keeps_the_epoch_it_showed() -> None:
    store = MemoryHistory()
    top = store.read("app", "feed", since=None, limit=1, reverse=False, wall=NOW).top
    entry = store.publish("app", "feed", f.Msg("feed", "e", 1, None, 0, "m1"), KEEP, NOW)
    assert (entry.epoch, entry.offset) == (top.epoch, 1)  # a client at (epoch, 0) recovers


def test_a_channel_whose_stream_was_lost_never_shows_an_epoch_it_had() -> None:
    store = MemoryHistory(meta_ttl=10.0)
    before = store.read("app", "feed", since=None, limit=1, reverse=False, wall=NOW).top
    store.publish("app", "feed", f.Msg("feed", "e", 1, None, 0, "m1"), KEEP, NOW)
    store.sweep(NOW + 10)  # its identity expired: dropped
    after = store.read("app", "feed", since=None, limit=1, reverse=False, wall=NOW + 10).top
    assert after.epoch != before.epoch  # a client at (before, 0) missed m1: not recovered


def test_streams_cost_no_more_than_they_count() -> None:
    store = MemoryHistory()
    short = Retention(size=1, ttl=1.0)

    def streams() -> None:
        for i in range(2000):
            store.publish("app", f"channel-{i}", f.Msg(None, "e", i, None, 0, "m"), short, NOW)
        store.sweep(NOW + 5)  # their messages expired: 2,000 empty streams remain

    held, _ = growth(streams)
    assert len(store) == 2000 and store.bytes >= 2000 * STREAM_OVERHEAD
    assert held <= store.bytes, (held / 2000, store.bytes / 2000)
    assert ENTRY_OVERHEAD >= 120
