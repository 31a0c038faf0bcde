"""The edges of channel history that a mutation run found unguarded (issue 20): the expiry and
identity boundaries, eviction when a stream is created, the byte count after a sweep, least
recently used order, paging with an oversized message and with nothing, and where a history
read's ``since`` may lie. Byte counts are compared with a store that holds the same things
(not with the per-entry constants), so they hold whatever a message is counted as."""

from __future__ import annotations

import pytest

from rtcore.core.history import (
    MemoryHistory,
    Retention,
    Slice,
    check_since,
    new_epoch,
    page,
    parse_position,
)
from rtcore.protocol import ErrorCode
from rtcore.protocol.errors import RemoteProtocolError
from rtcore.protocol.position import Position
from tests.unit.test_history import counting_epochs, msg, offsets
from tests.unit.test_session import NOW

KEEP = Retention(size=100, ttl=60.0)


def store(**kw: object) -> MemoryHistory:
    return MemoryHistory(epochs=counting_epochs(), **kw)  # type: ignore[arg-type]


def held(s: MemoryHistory, channel: str, wall: float = NOW) -> list[int]:
    return offsets(s.read("app", channel, since=None, limit=100, reverse=False, wall=wall).entries)


def test_a_message_expires_at_exactly_its_ttl() -> None:
    s = store()
    s.publish("app", "feed", msg(1), KEEP, NOW)
    assert held(s, "feed", NOW + 59.999) == [1]
    assert held(s, "feed", NOW + 60.0) == []


def test_a_streams_identity_ends_at_exactly_meta_ttl_after_its_last_use() -> None:
    s = store(meta_ttl=100.0)
    s.publish("app", "feed", msg(1), Retention(1, 1000.0), NOW)
    s.sweep(NOW + 99.999)
    assert len(s) == 1 and held(s, "feed", NOW + 99.999) == [1]
    s.sweep(NOW + 100.0)
    assert len(s) == 0


def test_a_sweep_leaves_the_count_of_what_is_still_held() -> None:
    swept, fresh = store(), store()
    for i in range(3):
        swept.publish("app", "feed", msg(i), Retention(10, 10.0), NOW)
    swept.publish("app", "feed", msg(3), Retention(10, 100.0), NOW + 5)
    swept.read("app", "idle", since=None, limit=1, reverse=False, wall=NOW)
    swept.sweep(NOW + 20)  # the first three expired; "idle" holds nothing
    fresh.publish("app", "feed", msg(3), Retention(10, 100.0), NOW + 5)  # what is left
    fresh.read("app", "idle", since=None, limit=1, reverse=False, wall=NOW)
    assert swept.bytes == fresh.bytes
    assert held(swept, "feed", NOW + 20) == [4]


def test_creating_a_stream_evicts_the_least_recently_used_to_stay_within_the_budget() -> None:
    probe = store()
    probe.publish("app", "x", msg(0, "x"), KEEP, NOW)
    stream_with_one = probe.bytes
    probe.publish("app", "x", msg(1, "x"), KEEP, NOW)
    one_message = probe.bytes - stream_with_one
    # "a" with three messages and "b" with one fill the budget exactly
    s = store(max_bytes=2 * stream_with_one + 2 * one_message)
    for i in range(3):
        s.publish("app", "a", msg(i, "a"), KEEP, NOW)
    s.publish("app", "b", msg(0, "b"), KEEP, NOW)
    assert s.bytes == s.max_bytes and len(s) == 2
    s.publish("app", "c", msg(0, "c"), KEEP, NOW)  # a new stream: over the budget
    assert s.bytes <= s.max_bytes
    # the least recently used ("a") went, messages first and then the stream; "b" stayed
    assert held(s, "a") == [] and held(s, "b") == [1] and held(s, "c") == [1]
    assert len(s) == 2


def test_eviction_follows_the_last_publish_not_the_first() -> None:
    probe = store()
    probe.publish("app", "x", msg(0, "x"), KEEP, NOW)
    stream_with_one = probe.bytes
    s = store(max_bytes=3 * stream_with_one)
    s.publish("app", "a", msg(0, "a"), KEEP, NOW)
    s.publish("app", "b", msg(0, "b"), KEEP, NOW)
    s.publish("app", "a", msg(1, "a"), KEEP, NOW)  # "a" is now the most recently used
    s.publish("app", "c", msg(0, "c"), KEEP, NOW)  # over: "b" goes first
    assert s.bytes <= s.max_bytes
    assert held(s, "a") == [1, 2] and held(s, "b") == []


def test_a_stream_being_written_is_never_evicted_even_alone_over_the_budget() -> None:
    s = store(max_bytes=1)
    entry = s.publish("app", "a", msg(0, "a"), KEEP, NOW)
    assert entry.offset == 1 and len(s) == 1  # its messages go, its identity stays


# -- pages ------------------------------------------------------------------------------------


def stream_of(sizes: list[int]) -> list[object]:
    s = store()
    return [s.publish("app", "feed", msg(n), KEEP, NOW) for n in sizes]


def found(entries: list[object], top: int) -> Slice:
    return Slice(Position("e1", top), 1, entries)  # type: ignore[arg-type]


def test_an_oversized_message_is_a_page_of_its_own_whose_next_moves_on() -> None:
    entries = stream_of([1, 2, 3])
    big = len(entries[0].data)  # type: ignore[attr-defined]
    reply = page(found(entries, 3), limit=3, max_bytes=big - 1)
    assert [m["offset"] for m in reply["messages"]] == [1]
    assert reply["next"] == {"epoch": "e1", "offset": 1}


def test_a_page_takes_messages_up_to_exactly_its_byte_budget() -> None:
    entries = stream_of([1, 2, 3])
    two = sum(len(e.data) for e in entries[:2])  # type: ignore[attr-defined]
    reply = page(found(entries, 3), limit=3, max_bytes=two)
    assert [m["offset"] for m in reply["messages"]] == [1, 2]
    reply = page(found(entries, 3), limit=3, max_bytes=two - 1)
    assert [m["offset"] for m in reply["messages"]] == [1]


def test_an_empty_read_is_an_empty_last_page() -> None:
    reply = page(found([], 0), limit=10, max_bytes=100)
    assert reply == {"messages": [], "epoch": "e1", "offset": 0, "next": None}


@pytest.mark.parametrize("reverse", [False, True])
def test_following_next_reads_every_message_once_and_ends(reverse: bool) -> None:
    s = store()
    for n in range(7):
        s.publish("app", "feed", msg(n if n != 3 else "x" * 5000), KEEP, NOW)  # type: ignore[arg-type]
    seen: list[int] = []
    since = None
    for _ in range(20):  # 7 messages: at most 7 pages
        read = s.read("app", "feed", since=since, limit=3, reverse=reverse, wall=NOW)
        reply = page(read, 2, max_bytes=300)
        seen += [m["offset"] for m in reply["messages"]]
        if reply["next"] is None:
            break
        assert reply["messages"], "a page with a next must hold a message"
        since = Position(reply["next"]["epoch"], reply["next"]["offset"])
    assert seen == (list(range(7, 0, -1)) if reverse else list(range(1, 8)))


# -- where a history read's since may lie --------------------------------------------------------


def test_since_must_be_of_the_streams_epoch_even_below_its_top() -> None:
    with pytest.raises(RemoteProtocolError, match="epoch 'e1'"):
        check_since(Position("e0", 1), Slice(Position("e1", 5), 1, []), reverse=False)


def test_since_just_before_the_oldest_held_is_in_the_stream_one_earlier_is_not() -> None:
    held_from_5 = Slice(Position("e1", 9), 5, [])
    check_since(Position("e1", 4), held_from_5, reverse=False)  # next is 5: held
    check_since(Position("e1", 9), held_from_5, reverse=False)  # the top: nothing newer
    with pytest.raises(RemoteProtocolError, match="oldest message held is offset 5"):
        check_since(Position("e1", 3), held_from_5, reverse=False)
    check_since(Position("e1", 3), held_from_5, reverse=True)  # reverse reads older: fine
    with pytest.raises(RemoteProtocolError):
        check_since(Position("e1", 10), held_from_5, reverse=True)


def test_trimming_to_the_size_counts_what_is_left() -> None:
    trimmed, fresh = store(), store()
    for n in range(5):
        trimmed.publish("app", "feed", msg(n), Retention(3, 60.0), NOW)
    for n in range(2, 5):
        fresh.publish("app", "feed", msg(n), Retention(3, 60.0), NOW)
    assert trimmed.bytes == fresh.bytes and held(trimmed, "feed") == [3, 4, 5]


def test_after_evictions_a_dropped_stream_takes_all_it_counted_with_it() -> None:
    probe = store()
    probe.publish("app", "x", msg(0, "x"), KEEP, NOW)
    s = store(max_bytes=2 * probe.bytes, meta_ttl=100.0)  # two streams of one message each
    for n in range(3):
        s.publish("app", "a", msg(n, "a"), KEEP, NOW)
    for n in range(3):
        s.publish("app", "b", msg(n, "b"), KEEP, NOW)  # evicts some of "a"
    assert len(held(s, "a")) < 3
    s.sweep(NOW + 100.0)  # both identities expire: nothing is left, nothing counted
    assert len(s) == 0 and s.bytes == 0


def test_a_read_says_where_the_stream_starts_whatever_it_returns() -> None:
    s = store()
    for n in range(5):
        s.publish("app", "feed", msg(n), Retention(3, 60.0), NOW)
    for since, reverse in [(None, True), (Position("e1", 5), True), (Position("x", 1), False)]:
        assert s.read("app", "feed", since=since, limit=2, reverse=reverse, wall=NOW).first == 3


def test_defaults_epochs_of_8_hex_digits_and_a_day_of_identity() -> None:
    assert MemoryHistory().meta_ttl == 86_400.0
    epoch = new_epoch()
    assert len(epoch) == 8 and int(epoch, 16) >= 0


@pytest.mark.parametrize(
    "value",
    [
        ["e1", 1],
        {"epoch": "e" * 65, "offset": 1},
        {"epoch": "", "offset": 1},
        {"epoch": "e1", "offset": -1},
        {"epoch": "e1", "offset": 2**53},
        {"epoch": "e1", "offset": True},
        {"epoch": "e1", "offset": 1.0},
        {"epoch": 1, "offset": 1},
    ],
)
def test_a_bad_position_is_a_bad_request(value: object) -> None:
    with pytest.raises(RemoteProtocolError, match="since: must be a map") as refused:
        parse_position(value, "since")
    assert refused.value.code == ErrorCode.BAD_REQUEST


def test_the_widest_position() -> None:
    assert parse_position({"epoch": "e" * 64, "offset": 2**53 - 1}, "since") == Position(
        "e" * 64, 2**53 - 1
    )
