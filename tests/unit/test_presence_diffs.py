"""Batched presence diffs (protocol.md §5.2.1) and presence_events (§4.1), without I/O."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcore.client._presence import MemberLists, member_events
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.outbox import Pending
from rtcore.core.presence import ChannelDiff, PresenceBatcher
from rtcore.core.session.session import Session
from rtcore.protocol import RemoteProtocolError
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, ok, take

DIFFS = {"features": ["presence_diffs"]}

# -- the accumulator ---------------------------------------------------------------------------

Members = dict[str, Any]
"""member id -> profile"""


def info(mid: str, profile: Any) -> dict[str, Any]:
    return {"id": mid, "user": None, "data": profile}


def apply_frame(members: Members, frame: f.PresenceDiff | None) -> None:
    """What a client does with a diff (protocol.md §5.2.1): leaves, then joins, then updates."""
    if frame is None:
        return
    for e in frame.leaves or ():
        members.pop(e["id"], None)
    for e in frame.joins or ():
        members[e["id"]] = e["data"]
    for e in frame.updates or ():
        members[e["id"]] = e["data"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[Members, list[list[tuple[str, str, int]]]]:
    """A starting membership and windows of events that are valid one after another."""
    ids = [f"m{i}" for i in range(6)]
    start = {m: 0 for m in draw(st.sets(st.sampled_from(ids)))}
    present = dict(start)
    windows: list[list[tuple[str, str, int]]] = []
    for _ in range(draw(st.integers(1, 4))):
        window = []
        for _ in range(draw(st.integers(0, 12))):
            mid = draw(st.sampled_from(ids))
            profile = draw(st.integers(0, 1000))
            if mid not in present:
                kind = "join"
            else:
                kind = draw(st.sampled_from(["leave", "update"]))
            window.append((kind, mid, profile))
            if kind == "leave":
                del present[mid]
            else:
                present[mid] = profile
        windows.append(window)
    return start, windows


@settings(max_examples=500, deadline=None)
@given(histories())
def test_a_folded_window_gives_the_same_membership_as_its_events_one_by_one(
    history: tuple[Members, list[list[tuple[str, str, int]]]],
) -> None:
    start, windows = history
    one_by_one, folded = dict(start), dict(start)
    for window in windows:
        diff = ChannelDiff()
        for kind, mid, profile in window:
            if kind == "join":
                one_by_one[mid] = profile
                diff.join(info(mid, profile), True)
            elif kind == "leave":
                del one_by_one[mid]
                diff.leave(info(mid, profile), True)
            else:
                one_by_one[mid] = profile
                diff.update(info(mid, profile))
        apply_frame(folded, diff.frame("c"))
        assert folded == one_by_one


def test_folding_rules() -> None:
    diff = ChannelDiff()
    diff.join(info("a", 1), True)
    diff.leave(info("a", 1), True)  # in and out within the window: not mentioned
    diff.leave(info("b", 2), False)
    diff.join(info("b", 3), False)  # left and came back: a leave and a join
    diff.update(info("c", 4))
    diff.update(info("c", 5))  # two updates: the latest
    diff.join(info("d", 6), True)
    diff.update(info("d", 7))  # a join and an update: one join with the latest profile
    frame = diff.frame("lobby")
    assert frame == f.PresenceDiff(
        "lobby",
        joins=[{**info("b", 3), "first": False}, {**info("d", 7), "first": True}],
        leaves=[{**info("b", 2), "last": False}],
        updates=[info("c", 5)],
    )
    only_in_and_out = ChannelDiff()
    only_in_and_out.join(info("a", 1), True)
    only_in_and_out.leave(info("a", 1), True)
    assert only_in_and_out.frame("lobby") is None


# -- sessions ----------------------------------------------------------------------------------


def join(s: Session, channel: str = "lobby", **extra: Any) -> None:
    assert ok(s, t="join", id=1, ch=channel, **extra) == {"joined": True}


def flush(world: World) -> None:
    """What the flusher does first in every pass: flush the pending diffs."""
    world.pending.take()


def presence_frames(s: Session) -> list[Any]:
    return [x for x in take(s) if isinstance(x, f.MemberEvent | f.PresenceDiff)]


def test_the_welcome_lists_the_features_the_server_enabled() -> None:
    world = World()
    s = Session("x", world.apps, world.config, world.pending)
    hello = {"t": "hello", "v": 1, "features": ["presence_diffs", "teleport"]}
    assert s.receive(msgpack.packb(hello), MONO, NOW) is None
    (welcome,) = take(s)
    assert welcome.features == ("presence_diffs",)  # unknown ones ignored
    assert s.member is not None and s.member.diffs
    assert world.session().member.diffs is False  # type: ignore[union-attr]


def test_a_window_of_joins_is_one_presence_frame_per_diff_member() -> None:
    world = World()
    first = world.session(DIFFS)
    join(first)
    flush(world)
    take(first)
    joiners = [world.session(DIFFS) for _ in range(5)]
    for s in joiners:
        join(s)
    flush(world)
    frames = presence_frames(first)
    assert len(frames) == 1  # five joins, one frame
    assert [e["id"] for e in frames[0].joins] == [s.conn_id for s in joiners]
    for s in joiners:  # everyone, the joiners too, gets the same one frame, own join included
        assert presence_frames(s) == frames


def test_legacy_members_of_a_mixed_channel_still_get_one_member_frame_per_event() -> None:
    world = World()
    old, new = world.session(), world.session(DIFFS)
    join(old)
    join(new)
    flush(world)
    take(old), take(new)
    a, b = world.session(), world.session(DIFFS)
    join(a)
    join(b)
    flush(world)
    assert [(x.kind, x.member["id"]) for x in presence_frames(old)] == [
        ("member_join", a.conn_id),
        ("member_join", b.conn_id),
    ]
    (diff,) = presence_frames(new)
    assert [e["id"] for e in diff.joins] == [a.conn_id, b.conn_id]
    ok(a, t="profile", id=2, data={"n": 1})
    ok(b, t="leave", id=3, ch="lobby")
    flush(world)
    assert [(x.kind, x.member["id"]) for x in presence_frames(old)] == [
        ("member_update", a.conn_id),
        ("member_leave", b.conn_id),
    ]
    (diff,) = presence_frames(new)
    assert diff.updates == [info(a.conn_id, {"n": 1})]
    assert [e["id"] for e in diff.leaves] == [b.conn_id]


def test_a_msg_never_overtakes_the_presence_before_it() -> None:
    """protocol.md §5.3: the channel's pending diff is queued before the message."""
    world = World()
    watcher = world.session(DIFFS)
    join(watcher)
    flush(world)
    take(watcher)
    joiner = world.session(DIFFS)
    join(joiner)
    ok(joiner, t="send", id=2, ch="lobby", ev="hi")  # before any flush pass
    kinds = [type(x) for x in take(watcher)]
    assert kinds == [f.PresenceDiff, f.Msg]
    late = world.session(DIFFS)
    join(late, "elsewhere")
    # A broadcast flushes every channel's pending diff first.
    broadcast = msgpack.packb({"t": "broadcast", "id": 3, "ev": "all"})
    assert late.receive(broadcast, MONO, NOW) is None
    assert [type(x) for x in take(late)] == [f.PresenceDiff, f.Msg, f.Ok]


def test_the_leaver_with_echo_hears_its_own_leave_as_a_diff() -> None:
    world = World()
    s, t = world.session(DIFFS), world.session(DIFFS)
    join(s)
    join(t)
    flush(world)
    take(s), take(t)
    assert s.receive(msgpack.packb({"t": "leave", "id": 2, "ch": "lobby"}), MONO, NOW) is None
    own, reply = take(s)
    assert own == f.PresenceDiff("lobby", leaves=[{**info(s.conn_id, None), "last": True}])
    assert isinstance(reply, f.Ok)
    flush(world)
    assert presence_frames(s) == []  # no longer a member: the channel's diff is not for it
    assert [e["id"] for e in presence_frames(t)[0].leaves] == [s.conn_id]


def test_diffs_follow_the_presence_permission() -> None:
    rules = (ChannelRule("vip-*", presence="signed_in"),)
    world = World(apps=(AppConfig("default", channels=rules),))
    anon, other = world.session(DIFFS), world.session(DIFFS)
    join(anon, "vip-1")
    join(other, "vip-1")
    flush(world)
    assert presence_frames(anon) == [] and presence_frames(other) == []


CHANNEL_RULES = (ChannelRule("live-*", presence_events=False),)


def test_presence_events_off_sends_no_presence_but_members_can_be_listed() -> None:
    world = World(apps=(AppConfig("default", channels=CHANNEL_RULES),))
    old, new = world.session(), world.session(DIFFS)
    join(old, "live-1")
    join(new, "live-1")
    ok(old, t="profile", id=2, data={"n": 1})
    ok(new, t="leave", id=3, ch="live-1")  # echo on: still nothing
    join(world.session(), "live-1")
    flush(world)
    assert presence_frames(old) == [] and presence_frames(new) == []
    listed = ok(old, t="members", id=4, ch="live-1")["members"]
    assert len(listed) == 2
    # Other channels are untouched by the rule.
    join(old, "lobby")
    assert [x.kind for x in presence_frames(old)] == []  # its own join came before the ok
    join(new, "lobby")
    assert [x.kind for x in presence_frames(old)] == ["member_join"]


# -- pacing ------------------------------------------------------------------------------------


def test_a_diff_to_many_members_holds_the_channels_next_one_back() -> None:
    sent: list[tuple[str, int]] = []
    reach = {"big": 1000, "small": 10}

    def publish(channel: str, frame: f.PresenceDiff) -> int:
        sent.append((channel, len(frame.joins or ())))
        return reach[channel]

    pending = Pending()
    pending.write_seconds = 10e-6  # as measured by the flusher
    batcher = PresenceBatcher(pending, publish)
    batcher.channel("big").join(info("a", None), True)
    batcher.channel("small").join(info("b", None), True)
    assert batcher.flush(10.0) == math.inf  # nothing held back yet
    assert sent == [("big", 1), ("small", 1)] and not pending.batches
    batcher.channel("big").join(info("c", None), True)
    batcher.channel("big").join(info("d", None), True)
    batcher.channel("small").join(info("e", None), True)
    # 1,000 members reached, at 10 µs a write: a 10 ms diff, so the next one no sooner than
    # 30 ms later (diffs take at most a quarter of the time)
    assert batcher.flush(10.005) == pytest.approx(10.03)
    assert sent[2:] == [("small", 1)] and pending.batches  # still pending
    assert batcher.flush(10.03) == math.inf
    assert sent[3:] == [("big", 2)] and not pending.batches  # both joins in one frame
    batcher.channel("big").join(info("f", None), True)
    batcher.flush_channel("big")  # before a msg: at once, paced or not
    assert sent[4:] == [("big", 1)]


def test_the_flusher_pass_flushes_what_is_due_and_records_when_the_rest_is() -> None:
    pending = Pending()
    for _ in range(100):  # the flusher's measurements: the average follows them
        pending.observe_write_cost(2e-6)
    assert pending.write_seconds == pytest.approx(2e-6, rel=1e-3)
    batcher = PresenceBatcher(pending, lambda channel, frame: 5000)
    batcher.channel("big").join(info("a", None), True)
    pending.take(1.0)
    batcher.channel("big").join(info("b", None), True)
    pending.take(1.01)
    assert pending.batch_due == pytest.approx(1.03, abs=1e-5)  # 5,000 × 2 µs × 3
    pending.take(1.031)
    assert pending.batch_due == math.inf and not pending


# -- the client's member lists -----------------------------------------------------------------


def test_a_member_list_converges_whatever_order_a_page_and_a_diff_arrive_in() -> None:
    diff = f.PresenceDiff(
        "c",
        joins=[{**info("b", 2), "first": True}],
        leaves=[{**info("a", 1), "last": True}],
    )
    page = {"members": [info("b", 2), info("z", 0)], "next": None}  # listed after the diff
    page_first, diff_first = MemberLists(), MemberLists()
    for lists in (page_first, diff_first):
        lists.track("c")
    page_first.merge_page("c", page)
    for event in member_events(diff):
        page_first.apply(event)
        diff_first.apply(event)
    diff_first.merge_page("c", page)
    assert page_first.members("c") == diff_first.members("c") == [info("b", 2), info("z", 0)]
    untracked = MemberLists()  # not joined: nothing kept
    untracked.merge_page("c", page)
    assert untracked.members("c") == []


def test_a_diff_is_taken_apart_leaves_then_joins_then_updates() -> None:
    diff = f.PresenceDiff(
        "c",
        joins=[{**info("a", 2), "first": False}],
        leaves=[{**info("a", 1), "last": False}],
        updates=[info("b", 3)],
    )
    assert [(e.kind, e.member["data"], e.first, e.last) for e in member_events(diff)] == [
        ("member_leave", 1, None, False),
        ("member_join", 2, False, None),
        ("member_update", 3, None, None),
    ]
    with pytest.raises(RemoteProtocolError, match="join entry without a string id"):
        member_events(f.PresenceDiff("c", joins=[{"id": 5}]))
