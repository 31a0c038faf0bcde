"""The presence batcher's edges (issue 20's mutation run): a member that leaves twice, the
pacing threshold, the pending mark following the table exactly, and the due times forgotten
so that they cannot grow without bound."""

from __future__ import annotations

import math

import pytest

from rtcore.core.outbox import Pending
from rtcore.core.presence import PACE_FROM, ChannelDiff, PresenceBatcher
from rtcore.protocol import frames as f
from tests.unit.test_presence_diffs import info


def test_a_member_that_leaves_twice_is_shown_as_it_first_left() -> None:
    diff = ChannelDiff()
    diff.leave(info("a", "before"), True)
    diff.join(info("a", "back"), False)
    diff.leave(info("a", "again"), False)
    assert diff.frame("c") == f.PresenceDiff("c", None, [{**info("a", "before"), "last": True}])


def test_a_member_that_left_and_came_back_is_a_leave_then_a_join() -> None:
    diff = ChannelDiff()
    diff.update(info("a", "updated"))
    diff.leave(info("a", "gone"), None)
    diff.join(info("a", "back"), True)
    assert diff.frame("c") == f.PresenceDiff(
        "c", [{**info("a", "back"), "first": True}], [info("a", "gone")]
    )


def test_an_empty_diff_is_false_and_a_cancelled_one_has_no_frame() -> None:
    diff = ChannelDiff()
    assert not diff and diff.frame("c") is None
    diff.join(info("a", None), True)
    diff.leave(info("a", None), True)
    assert diff and diff.frame("c") is None  # joined and left within the window


def batcher_reaching(members: int) -> tuple[PresenceBatcher, Pending, list[str]]:
    sent: list[str] = []

    def publish(channel: str, frame: f.PresenceDiff) -> int:
        sent.append(channel)
        return members

    pending = Pending()
    pending.write_seconds = 1e-3
    return PresenceBatcher(pending, publish), pending, sent


@pytest.mark.parametrize(("members", "paced"), [(PACE_FROM, False), (PACE_FROM + 1, True)])
def test_diffs_are_paced_only_beyond_pace_from_members(members: int, paced: bool) -> None:
    batcher, _, sent = batcher_reaching(members)
    batcher.channel("c").join(info("a", None), True)
    assert batcher.flush(10.0) == math.inf
    batcher.channel("c").join(info("b", None), True)
    due = batcher.flush(10.0)
    assert (sent == ["c"], due < math.inf) == (paced, paced)
    assert due == (10.0 + members * 1e-3 * 3 if paced else math.inf)


def test_the_batcher_is_pending_exactly_while_it_holds_diffs() -> None:
    batcher, pending, _ = batcher_reaching(1)
    assert not pending.batches
    batcher.channel("a").join(info("x", None), True)
    batcher.channel("b").join(info("y", None), True)
    assert list(pending.batches.values()) == [batcher] and batcher
    batcher.flush_channel("a")
    assert pending.batches and batcher  # "b" is still held
    batcher.flush_channel("a")  # nothing held for it: no change
    assert pending.batches
    batcher.flush_channel("b")
    assert not pending.batches and not batcher
    batcher.channel("a").join(info("z", None), True)
    assert pending.batches
    batcher.flush()
    assert not pending.batches and not batcher


def test_due_times_of_channels_that_went_quiet_are_forgotten() -> None:
    reach = {"n": PACE_FROM + 1}
    batcher = PresenceBatcher(Pending(), lambda channel, frame: reach["n"])
    for i in range(500):  # each channel's diff reached many: each gets a due time
        batcher.channel(f"c{i}").join(info("a", None), True)
    batcher.flush(1.0)
    assert len(batcher._due) == 500
    reach["n"] = 1  # later diffs reach few: their channel's due time goes
    batcher.channel("c0").join(info("b", None), True)
    batcher.flush(100.0)
    assert "c0" not in batcher._due
    batcher.channel("other").join(info("b", None), True)
    batcher.flush(100.0)  # long past every due time: they are forgotten, the table bounded
    assert len(batcher._due) <= 64


def test_a_cancelled_diff_publishes_nothing() -> None:
    batcher, pending, sent = batcher_reaching(PACE_FROM + 1)
    batcher.channel("c").join(info("a", None), True)
    batcher.channel("c").leave(info("a", None), True)
    assert batcher.flush(1.0) == math.inf and sent == [] and not pending.batches
    batcher.channel("c").join(info("b", None), True)
    assert batcher.flush(1.0) == math.inf and sent == ["c"]  # and nothing was paced before


def test_a_flush_of_everything_paces_nothing_after_it() -> None:
    batcher, _, sent = batcher_reaching(PACE_FROM + 1)
    batcher.channel("c").join(info("a", None), True)
    batcher.flush()  # before a broadcast: everything, now
    batcher.channel("c").join(info("b", None), True)
    assert batcher.flush(1.0) == math.inf  # sent at once (then paced from this diff on)
    assert sent == ["c", "c"]


def paced(batcher: PresenceBatcher, count: int, now: float) -> None:
    for i in range(count):
        batcher.channel(f"p{i}").join(info("a", None), True)
    batcher.flush(now)


@pytest.mark.parametrize(("count", "forgotten"), [(1, False), (64, False), (65, True)])
def test_past_due_times_are_forgotten_beyond_64_more_than_twice_the_held_diffs(
    count: int, forgotten: bool
) -> None:
    batcher, _, _ = batcher_reaching(PACE_FROM + 1)
    paced(batcher, count, 1.0)
    assert len(batcher._due) == count
    due = max(batcher._due.values())
    batcher.flush(due)  # exactly when the last is due: all are past
    assert len(batcher._due) == (0 if forgotten else count)


def test_held_diffs_raise_the_number_of_due_times_kept() -> None:
    batcher, _, _ = batcher_reaching(PACE_FROM + 1)
    paced(batcher, 66, 1.0)  # due at 1.303
    batcher.channel("q").join(info("a", None), True)
    batcher.flush(1.2)  # "q" due at 1.503: 67 due times
    batcher.channel("q").join(info("b", None), True)
    batcher.flush(1.4)  # "q" held: 67 > 2 × 1 + 64, so the 66 past ones go
    assert set(batcher._due) == {"q"}


def test_due_times_stay_after_a_flush_of_everything() -> None:
    batcher, _, sent = batcher_reaching(PACE_FROM + 1)
    paced(batcher, 100, 1.0)
    batcher.flush()  # nothing held: the due times stay
    batcher.channel("p0").join(info("b", None), True)
    assert batcher.flush(1.0) > 1.0 and sent.count("p0") == 1  # still held back
