"""What protocol.md says about history, recovery, presence diffs and refresh in prose that an
outside implementer had to guess (issue 21, item 13), each checked against the core."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack
import pytest

from rtcore.config import AppConfig, ChannelRule, Limits
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_presence_diffs import DIFFS, flush, join, presence_frames
from tests.unit.test_session import MONO, NOW, World, err, ok, take
from tests.unit.test_session_security import EXPIRING, token

FEED = AppConfig(
    "a",
    channels=(
        ChannelRule("feed*", history_size=10),
        ChannelRule("vip*", history_size=10, history="signed_in"),
    ),
)


def feed(limits: Limits | None = None, sent: int = 3) -> tuple[World, Session, str]:
    """A world whose channel ``feed`` holds ``sent`` messages (offsets 1..sent); its epoch."""
    world = World(limits=limits, apps=(FEED,))
    publisher = world.session()
    ok(publisher, t="join", id=1, ch="feed")
    for i in range(sent):
        ok(publisher, t="send", id=10 + i, ch="feed", ev="e", data=i)
    return world, publisher, ok(publisher, t="history", id=2, ch="feed", limit=1)["epoch"]


def test_a_channel_with_history_keeps_its_stream_after_its_last_member_left() -> None:
    """§4.2 vs §4.4.1: the member list goes with the last leave, the stream does not."""
    world, publisher, epoch = feed()
    ok(publisher, t="leave", id=3, ch="feed")
    assert "feed" not in world.apps["a"].table.channels()
    reader = world.session()
    page = ok(reader, t="history", id=1, ch="feed")
    assert [m["data"] for m in page["messages"]] == [0, 1, 2]
    joined = ok(reader, t="join", id=2, ch="feed", recover={"epoch": epoch, "offset": 1})
    assert (joined["recovered"], joined["epoch"], joined["offset"]) == (True, epoch, 3)


@pytest.mark.parametrize("why", ["forbidden", "already_joined"])
def test_an_ok_that_did_not_recover_still_carries_the_position(why: str) -> None:
    world, publisher, epoch = feed()
    s = world.session()
    ch = "vip" if why == "forbidden" else "feed"
    if why == "already_joined":
        ok(s, t="join", id=1, ch=ch)
    else:
        ok(publisher, t="send", id=5, ch="feed", ev="e")  # vip's own stream is empty
    joined = ok(s, t="join", id=2, ch=ch, recover={"epoch": epoch, "offset": 0})
    assert joined["recovered"] is False and joined["reason"] == why
    assert isinstance(joined["epoch"], str) and type(joined["offset"]) is int


def test_limit_is_at_least_1() -> None:
    world, _, _ = feed()
    s = world.session()
    err(s, ErrorCode.BAD_REQUEST, t="history", id=1, ch="feed", limit=0)
    assert len(ok(s, t="history", id=2, ch="feed", limit=1)["messages"]) == 1


def test_a_page_that_reaches_the_top_or_the_oldest_exactly_has_no_next() -> None:
    world, _, epoch = feed()
    s = world.session()
    assert ok(s, t="history", id=1, ch="feed", limit=3)["next"] is None
    assert ok(s, t="history", id=2, ch="feed", limit=2)["next"] == {"epoch": epoch, "offset": 2}
    assert ok(s, t="history", id=3, ch="feed", limit=3, reverse=True)["next"] is None


def test_a_reverse_since_at_or_before_the_oldest_is_an_empty_last_page() -> None:
    world, _, epoch = feed()
    page = ok(world.session(), t="history", id=1, ch="feed", reverse=True,
              since={"epoch": epoch, "offset": 0})  # fmt: skip
    assert (page["messages"], page["next"], page["offset"]) == ([], None, 3)


def test_a_never_used_channel_with_history_has_an_empty_stream() -> None:
    world = World(apps=(FEED,))
    s = world.session()
    page = ok(s, t="history", id=1, ch="feed-new")
    assert (page["messages"], page["offset"], page["next"]) == ([], 0, None)
    assert isinstance(page["epoch"], str) and page["epoch"]
    assert ok(s, t="join", id=2, ch="feed-new")["epoch"] == page["epoch"]


def test_nil_recover_and_nil_since_are_the_same_as_none() -> None:
    world, _, epoch = feed()
    s = world.session()
    assert ok(s, t="join", id=1, ch="feed", recover=None) == {
        "joined": True,
        "epoch": epoch,
        "offset": 3,
    }
    assert ok(s, t="history", id=2, ch="feed", since=None) == ok(s, t="history", id=3, ch="feed")


@pytest.mark.parametrize(
    "position",
    [{"offset": 2**53}, {"epoch": ""}, {"epoch": "e" * 65}, {"offset": -1}, {"offset": 1.0}],
)
def test_a_position_out_of_range_is_a_bad_request(position: dict[str, Any]) -> None:
    world, _, epoch = feed()
    s = world.session()
    since = {"epoch": epoch, "offset": 1, **position}
    err(s, ErrorCode.BAD_REQUEST, t="history", id=1, ch="feed", since=since)
    err(s, ErrorCode.BAD_REQUEST, t="join", id=2, ch="feed", recover=since)
    top = {"epoch": epoch, "offset": 2**53 - 1}  # valid, but beyond the top
    err(s, ErrorCode.UNRECOVERABLE_POSITION, t="history", id=3, ch="feed", since=top)


def test_a_recovering_joiners_own_member_join_comes_before_the_replay() -> None:
    world, _, epoch = feed()
    s = world.session({"echo": True})
    join = {"t": "join", "id": 1, "ch": "feed", "recover": {"epoch": epoch, "offset": 1}}
    assert s.receive(msgpack.packb(join), MONO, NOW) is None
    frames = take(s)
    assert [type(x) for x in frames] == [f.MemberEvent, f.Msg, f.Msg, f.Ok]
    assert [m.offset for m in frames[1:3]] == [2, 3]


@pytest.mark.parametrize(("spare", "recovered"), [(0, True), (-1, False)])
def test_the_recovery_budget_counts_the_framed_bytes_of_the_messages(
    spare: int, recovered: bool
) -> None:
    """Half of outbound_buffer_bytes, measured as the bytes written for each msg: exactly
    that many recover, one byte less does not."""
    world, _, epoch = feed()
    watcher = world.session()
    ok(watcher, t="join", id=1, ch="feed")
    sender = world.session()
    ok(sender, t="join", id=1, ch="feed")
    take(watcher)  # from here on only the two messages reach it
    for i in range(2):
        ok(sender, t="send", id=2 + i, ch="feed", ev="e", data="x" * 100)
    framed = sum(len(bytes(item)) for item in watcher.outbox.items)  # offsets 4 and 5
    limits = attrs.evolve(Limits(), outbound_buffer_bytes=2 * (framed + spare))
    world.config = attrs.evolve(world.config, limits=limits)
    s = Session("late", world.apps, world.config, world.pending)
    assert s.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW) is None
    take(s)
    joined = ok(s, t="join", id=1, ch="feed", recover={"epoch": epoch, "offset": 3})
    assert joined["recovered"] is recovered
    assert joined.get("reason") == (None if recovered else "too_many")


def test_a_leaver_with_echo_false_gets_no_diff_of_its_own_leave() -> None:
    world = World()
    a, b = world.session(DIFFS), world.session(DIFFS)
    join(a)
    join(b)
    flush(world)
    take(a), take(b)
    ok(a, t="leave", id=2, ch="lobby", echo=False)
    flush(world)
    assert presence_frames(a) == []
    (diff,) = presence_frames(b)
    assert [e["id"] for e in diff.leaves or ()] == [a.conn_id]


def test_an_update_may_name_a_member_the_receiver_has_not_listed_yet() -> None:
    world = World()
    old = world.session(DIFFS)
    join(old)
    flush(world)
    take(old)
    new = world.session(DIFFS)
    join(new)  # before it lists the channel, old updates its profile
    ok(old, t="profile", id=3, data={"name": "old"})
    flush(world)
    (diff,) = presence_frames(new)
    assert [e["id"] for e in diff.joins or ()] == [new.conn_id]
    assert diff.updates == [{"id": old.conn_id, "user": None, "data": {"name": "old"}}]


def test_refresh_checks_run_in_the_documented_order() -> None:
    """§4.10: frame, limiters, session settings, token, user, ended session."""
    limited = attrs.evolve(
        EXPIRING,
        rate_limits=(Rule("r", rate=2, per_seconds=60.0, operations=frozenset({"refresh"})),),
    )
    world = World(apps=(limited,))
    anon = world.session()
    err(anon, ErrorCode.BAD_REQUEST, t="refresh", id=1)
    err(anon, ErrorCode.INVALID_TOKEN, t="refresh", id=2, token="junk")  # not forbidden
    err(anon, ErrorCode.FORBIDDEN, t="refresh", id=3, token=token("alice"))
    err(anon, ErrorCode.RATE_LIMITED, t="refresh", id=4, token="junk")  # limiters first
    keyless = World(apps=(AppConfig("a"),)).session()
    err(keyless, ErrorCode.FORBIDDEN, t="refresh", id=1, token="junk")
