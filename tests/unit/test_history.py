"""Channel history (rtcore.core.history): stream semantics, the recovery rule, bounded memory; and
the session's recovery handshake and history requests, with the replay/live boundary checked
by hypothesis over interleavings of publishes, drops and rejoins."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcore.config import AppConfig, ChannelRule, Limits
from rtcore.core.history import (
    ENTRY_OVERHEAD,
    STREAM_OVERHEAD,
    MemoryHistory,
    Retention,
    decide_recovery,
)
from rtcore.core.session.session import Session
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from rtcore.protocol.position import Position
from tests.cases import HISTORY_EXPIRY_CASES, ids
from tests.unit.test_session import MONO, NOW, World, err, ok, take

KEEP = Retention(size=3, ttl=60.0)


def msg(n: int, channel: str = "feed") -> f.Msg:
    return f.Msg(channel, "e", n, None, 0, f"m{n}")


def counting_epochs() -> Any:
    counter = itertools.count(1)
    return lambda: f"e{next(counter)}"


def offsets(entries: list[Any]) -> list[int]:
    return [e.offset for e in entries]


# -- the memory store -------------------------------------------------------------------------


def test_offsets_count_from_one_per_stream_and_each_message_carries_its_position() -> None:
    store = MemoryHistory(epochs=counting_epochs())
    a = [store.publish("app", "feed", msg(i), KEEP, NOW) for i in range(3)]
    b = store.publish("app", "other", msg(9, "other"), KEEP, NOW)
    c = store.publish("other-app", "feed", msg(9), KEEP, NOW)
    assert [(e.offset, e.msg.epoch) for e in a] == [(1, "e1"), (2, "e1"), (3, "e1")]
    # streams created while none was dropped share the unused epoch (issue 20: reads create
    # no stream); a position is read with its channel, so only a channel's successive
    # streams need distinct epochs (test_a_stream_unused_for_meta_ttl_...)
    assert (b.offset, b.msg.epoch, c.offset, c.msg.epoch) == (1, "e1", 1, "e1")
    assert (b.epoch, c.epoch) == ("e1", "e1")
    assert a[1].msg.offset == 2 and a[1].msg.data == 1  # the stored frame is the published one


def test_trimmed_by_size_and_by_ttl() -> None:
    store = MemoryHistory()
    for i in range(5):
        store.publish("app", "feed", msg(i), KEEP, NOW + i)
    found = store.read("app", "feed", since=None, limit=10, reverse=False, wall=NOW + 4)
    assert offsets(found.entries) == [3, 4, 5] and found.first == 3 and found.top.offset == 5
    # offset 3 was published at NOW + 2: gone at NOW + 62, offset 4 at NOW + 63
    found = store.read("app", "feed", since=None, limit=10, reverse=False, wall=NOW + 62.5)
    assert offsets(found.entries) == [4, 5] and found.first == 4
    found = store.read("app", "feed", since=None, limit=10, reverse=False, wall=NOW + 70)
    assert found.entries == [] and found.first == 6 and found.top.offset == 5  # identity kept


def test_a_stream_unused_for_meta_ttl_starts_over_with_a_new_epoch() -> None:
    store = MemoryHistory(meta_ttl=100.0, epochs=counting_epochs())
    store.publish("app", "feed", msg(1), KEEP, NOW)
    assert store.read("app", "feed", since=None, limit=1, reverse=True, wall=NOW + 99).top == (
        Position("e1", 1)
    )
    entry = store.publish("app", "feed", msg(2), KEEP, NOW + 100)
    assert (entry.msg.epoch, entry.offset) == ("e2", 1)
    store.sweep(NOW + 200)
    assert len(store) == 0 and store.bytes == 0


def test_reading_an_unknown_channel_creates_its_stream_at_offset_zero() -> None:
    store = MemoryHistory(epochs=counting_epochs())
    found = store.read("app", "feed", since=None, limit=5, reverse=False, wall=NOW)
    assert found.top == Position("e1", 0) and found.first == 1 and found.entries == []
    assert store.publish("app", "feed", msg(1), KEEP, NOW).msg.epoch == "e1"


def test_paging_forward_and_reverse() -> None:
    store = MemoryHistory(epochs=counting_epochs())
    big = Retention(size=100, ttl=60.0)
    for i in range(10):
        store.publish("app", "feed", msg(i), big, NOW)

    def read(since: int | None, reverse: bool, epoch: str = "e1") -> list[int]:
        at = None if since is None else Position(epoch, since)
        found = store.read("app", "feed", since=at, limit=3, reverse=reverse, wall=NOW)
        return offsets(found.entries)

    assert read(None, False) == [1, 2, 3] and read(3, False) == [4, 5, 6]
    assert read(9, False) == [10] and read(10, False) == []
    assert read(None, True) == [10, 9, 8] and read(8, True) == [7, 6, 5]
    assert read(2, True) == [1] and read(1, True) == [] and read(0, True) == []
    assert read(3, False, epoch="other") == [] and read(5, True, epoch="other") == []


def test_memory_is_bounded_across_streams_least_recently_published_first() -> None:
    data_size = len(store_entry_bytes())
    per = data_size + ENTRY_OVERHEAD
    streams = 2 * (STREAM_OVERHEAD + len("app") + len("old"))
    store = MemoryHistory(max_bytes=streams + 5 * per, epochs=counting_epochs())
    big = Retention(size=100, ttl=60.0)
    for i in range(3):
        store.publish("app", "old", msg(i, "old"), big, NOW)
    for i in range(3):
        store.publish("app", "new", msg(i, "new"), big, NOW)
    assert store.bytes <= store.max_bytes
    old = store.read("app", "old", since=None, limit=10, reverse=False, wall=NOW)
    new = store.read("app", "new", since=None, limit=10, reverse=False, wall=NOW)
    assert offsets(old.entries) == [2, 3] and offsets(new.entries) == [1, 2, 3]
    for i in range(3, 8):  # "new" alone grows beyond the bound: "old" goes entirely
        store.publish("app", "new", msg(i, "new"), big, NOW)
    assert store.bytes <= store.max_bytes
    assert store.read("app", "old", since=None, limit=1, reverse=False, wall=NOW).top == (
        Position("e2", 0)  # its identity was evicted too: a new epoch (its was e1)
    )


def store_entry_bytes() -> bytes:
    return MemoryHistory().publish("app", "old", msg(0, "old"), KEEP, NOW).data


# -- the recovery rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "recovered", "reason", "replayed"),
    [
        (Position("e1", 7), True, None, [8, 9, 10]),
        (Position("e1", 10), True, None, []),
        (Position("e1", 6), True, None, [7, 8, 9, 10]),  # the oldest held is next
        (Position("e1", 5), False, "gap_too_old", []),  # 6 was trimmed
        (Position("e1", 11), False, "epoch_changed", []),  # beyond the top
        (Position("e0", 9), False, "epoch_changed", []),
    ],
)
def test_recovered_iff_same_epoch_and_every_later_offset_is_held(
    since: Position, recovered: bool, reason: str | None, replayed: list[int]
) -> None:
    store = MemoryHistory(epochs=lambda: "e1")
    for i in range(10):
        store.publish("app", "feed", msg(i), Retention(size=4, ttl=60.0), NOW)
    found = store.read("app", "feed", since=since, limit=101, reverse=False, wall=NOW)
    outcome = decide_recovery(since, found, 100, 10**6)
    assert (outcome.recovered, outcome.reason, offsets(outcome.entries)) == (
        recovered,
        reason,
        replayed,
    )
    assert outcome.top == Position("e1", 10)


def test_a_replay_beyond_the_limits_is_refused_whole() -> None:
    store = MemoryHistory(epochs=lambda: "e1")
    for i in range(10):
        store.publish("app", "feed", msg(i), Retention(size=100, ttl=60.0), NOW)
    since = Position("e1", 2)
    found = store.read("app", "feed", since=since, limit=9, reverse=False, wall=NOW)
    assert decide_recovery(since, found, 8, 10**6).recovered
    found = store.read("app", "feed", since=since, limit=8, reverse=False, wall=NOW)
    assert decide_recovery(since, found, 7, 10**6).reason == "too_many"
    size = sum(len(e.data) for e in found.entries)
    found = store.read("app", "feed", since=since, limit=9, reverse=False, wall=NOW)
    assert decide_recovery(since, found, 8, size - 1).reason == "too_many"
    assert decide_recovery(since, found, 8, size).recovered


# -- the session: recovery handshake and history requests -------------------------------------


def history_world(size: int = 100, ttl: float = 300.0, **limits: Any) -> World:
    rules = (
        ChannelRule("feed*", history_size=size, history_ttl=ttl),
        ChannelRule("private*", join="anyone", history="signed_in", history_size=size),
    )
    return World(Limits(**limits), apps=(AppConfig("default", channels=rules),))


def publish(world: World, n: int, channel: str = "feed", wall: float = NOW) -> None:
    world.apps["default"].send(channel, "e", n, wall=wall)


def msgs(frames: list[Any]) -> list[Any]:
    return [x for x in frames if isinstance(x, f.Msg)]


def test_msgs_of_history_channels_carry_offset_and_epoch_others_do_not() -> None:
    world = history_world()
    s = world.session()
    top = ok(s, t="join", id=1, ch="feed")
    assert top["joined"] and top["offset"] == 0 and isinstance(top["epoch"], str)
    assert ok(s, t="join", id=2, ch="plain") == {"joined": True}
    sent = ok(s, t="send", id=3, ch="feed", ev="e", data=1, echo=False)
    assert (sent["epoch"], sent["offset"]) == (top["epoch"], 1)
    publish(world, 2)
    publish(world, 3, "plain")
    got = msgs(take(s))
    assert [(m.offset, m.epoch) for m in got] == [(2, top["epoch"]), (None, None)]


def test_a_rejoin_with_its_position_replays_what_it_missed_before_the_ok() -> None:
    world = history_world()
    s = world.session()
    epoch = ok(s, t="join", id=1, ch="feed")["epoch"]
    publish(world, 1)
    take(s)
    s.disconnected()
    for i in range(2, 6):
        publish(world, i)
    again = world.session()
    assert (
        again.receive(
            msgpack.packb(
                {"t": "join", "id": 1, "ch": "feed", "recover": {"epoch": epoch, "offset": 1}}
            ),
            MONO,
            NOW,
        )
        is None
    )
    frames = [x for x in take(again) if not isinstance(x, f.MemberEvent)]
    assert [m.data for m in frames[:-1]] == [2, 3, 4, 5]
    assert frames[-1].data == {"joined": True, "epoch": epoch, "offset": 5, "recovered": True}
    publish(world, 6)
    assert [m.offset for m in msgs(take(again))] == [6]


@pytest.mark.parametrize(
    ("recover", "reason"),
    [
        ({"epoch": "not-it", "offset": 1}, "epoch_changed"),
        ({"offset": 0}, None),  # bad_request
    ],
)
def test_a_bad_or_foreign_position_is_not_recovered(recover: dict[str, Any], reason: Any) -> None:
    world = history_world()
    s = world.session()
    if reason is None:
        err(s, ErrorCode.BAD_REQUEST, t="join", id=1, ch="feed", recover=recover)
        return
    data = ok(s, t="join", id=1, ch="feed", recover=recover)
    assert data["recovered"] is False and data["reason"] == reason


def test_recovery_reasons_history_off_gap_forbidden_already_joined_too_many() -> None:
    world = history_world(size=3, max_recovery=4)
    s = world.session()
    epoch = ok(s, t="join", id=1, ch="feed")["epoch"]
    pos = {"epoch": epoch, "offset": 0}
    again = ok(s, t="join", id=2, ch="feed", recover=pos)
    assert again["joined"] is False and again["reason"] == "already_joined"
    off = ok(s, t="join", id=3, ch="plain", recover=pos)
    assert off == {"joined": True, "recovered": False, "reason": "history_off"}
    for i in range(5):
        publish(world, i)
    take(s)
    late = world.session()
    gap = ok(late, t="join", id=1, ch="feed", recover=pos)
    assert (gap["recovered"], gap["reason"], gap["offset"]) == (False, "gap_too_old", 5)
    anon = world.session()
    publish(world, 9, "private")
    forbidden = ok(anon, t="join", id=1, ch="private", recover={"epoch": "x", "offset": 0})
    assert forbidden["reason"] == "forbidden" and forbidden["offset"] == 1
    many = history_world(size=10, max_recovery=4)
    s = many.session()
    epoch = ok(s, t="join", id=1, ch="feed")["epoch"]
    for i in range(5):
        publish(many, i)
    refused = ok(many.session(), t="join", id=1, ch="feed", recover={"epoch": epoch, "offset": 0})
    assert refused["reason"] == "too_many"
    fine = many.session()
    assert ok(fine, t="join", id=1, ch="feed", recover={"epoch": epoch, "offset": 1})["recovered"]


def test_history_requests_page_both_ways_and_refuse_what_they_must() -> None:
    world = history_world(size=5)
    s = world.session()
    for i in range(1, 8):
        publish(world, i)
    first = ok(s, t="history", id=1, ch="feed", limit=2)
    assert [m["data"] for m in first["messages"]] == [3, 4]
    assert first["messages"][0]["t"] == "msg" and first["offset"] == 7
    second = ok(s, t="history", id=2, ch="feed", limit=2, since=first["next"])
    third = ok(s, t="history", id=3, ch="feed", limit=2, since=second["next"])
    assert [m["data"] for m in second["messages"] + third["messages"]] == [5, 6, 7]
    assert third["next"] is None
    newest = ok(s, t="history", id=4, ch="feed", limit=3, reverse=True)
    older = ok(s, t="history", id=5, ch="feed", limit=3, reverse=True, since=newest["next"])
    assert [m["offset"] for m in newest["messages"] + older["messages"]] == [7, 6, 5, 4, 3]
    assert older["next"] is None
    epoch = first["epoch"]
    err(s, ErrorCode.HISTORY_UNAVAILABLE, t="history", id=6, ch="plain")
    err(s, ErrorCode.FORBIDDEN, t="history", id=7, ch="private")
    err(s, ErrorCode.BAD_REQUEST, t="history", id=8, ch="feed", limit=1001)
    err(
        s,
        ErrorCode.UNRECOVERABLE_POSITION,
        t="history",
        id=9,
        ch="feed",
        since={"epoch": epoch, "offset": 1},
    )  # 2 was trimmed: the page would skip it
    err(
        s,
        ErrorCode.UNRECOVERABLE_POSITION,
        t="history",
        id=10,
        ch="feed",
        since={"epoch": "other", "offset": 1},
    )
    err(s, ErrorCode.INVALID_CHANNEL, t="history", id=11, ch="bad channel")


def test_a_history_page_stays_within_half_the_outbound_buffer() -> None:
    world = history_world(size=50, outbound_buffer_bytes=4096)
    for _ in range(20):
        world.apps["default"].send("feed", "e", "x" * 300, wall=NOW)
    s = world.session()
    page = ok(s, t="history", id=1, ch="feed", limit=20)
    assert 1 < len(page["messages"]) < 20 and page["next"] is not None
    assert sum(len(msgpack.packb(m)) for m in page["messages"]) <= 2048


# -- the replay/live boundary, over interleavings -----------------------------------------------


@attrs.define
class Subscriber:
    """A client as the protocol asks: a position, the messages it got, and recovery."""

    session: Session | None = None
    epoch: str | None = None
    offset: int = 0
    got: list[int] = attrs.field(factory=list)
    lost: bool = False


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 12),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(1, 6)),
            st.tuples(st.just("drop"), st.just(0)),
            st.tuples(st.just("rejoin"), st.just(0)),
            st.tuples(st.just("send_then_rejoin"), st.integers(1, 3)),
        ),
        max_size=40,
    ),
)
def test_the_replay_live_boundary_loses_and_repeats_nothing(
    size: int, steps: list[tuple[str, int]]
) -> None:
    world = history_world(size=size, max_recovery=8)
    app = world.apps["default"]
    publisher = world.session()
    ok(publisher, t="join", id=1, ch="feed")
    sub = Subscriber(world.session())
    assert sub.session is not None
    top = ok(sub.session, t="join", id=1, ch="feed")
    sub.epoch = top["epoch"]
    published = 0
    at_join = [0]
    rid = itertools.count(2)

    def receive() -> None:
        """What the subscriber's connection got: every msg must be the next offset."""
        if sub.session is None:
            return
        for frame in take(sub.session):
            if isinstance(frame, f.Msg):
                assert (frame.epoch, frame.offset) == (sub.epoch, sub.offset + 1)
                sub.offset += 1
                sub.got.append(frame.data)
            elif isinstance(frame, f.Ok) and "recovered" in frame.data:
                data = frame.data
                assert data["offset"] == at_join[0]  # the top as the join saw it
                missed = at_join[0] - sub.offset
                expected = missed <= min(size, 8)
                assert data["recovered"] is expected, (data, missed)
                if not expected:
                    assert data["reason"] == ("gap_too_old" if missed > size else "too_many")
                    sub.lost = True
                    sub.got += [None] * missed  # what it must refetch elsewhere
                    sub.offset = data["offset"]

    for kind, n in steps:
        if kind == "publish":
            for _ in range(n):
                published += 1
                app.send("feed", "e", published, wall=NOW)
            receive()
        elif kind == "drop" and sub.session is not None:
            receive()
            sub.session.disconnected()
            sub.session = None
        elif kind in ("rejoin", "send_then_rejoin") and sub.session is None:
            sub.session = world.session()
            recover = {"epoch": sub.epoch, "offset": sub.offset}
            if kind == "send_then_rejoin":
                # publishes arrive in the same read as the join: before and after it
                for _ in range(n):
                    published += 1
                    app.send("feed", "e", published, wall=NOW)
            frame = {"t": "join", "id": next(rid), "ch": "feed", "recover": recover}
            at_join[0] = published
            assert sub.session.receive(msgpack.packb(frame), MONO, NOW) is None
            if kind == "send_then_rejoin":
                for _ in range(n):
                    published += 1
                    app.send("feed", "e", published, wall=NOW)
            receive()
    if sub.session is not None:
        receive()
        assert len(sub.got) == published
        assert [x for x in sub.got if x is not None] == sorted(x for x in sub.got if x is not None)
        if not sub.lost:
            assert sub.got == list(range(1, published + 1))


# -- configuration ------------------------------------------------------------------------------


def rules(**rule: Any) -> dict[str, Any]:
    return {"apps": [{"name": "a", "channels": [{"pattern": "feed*", **rule}]}]}


def test_history_is_opt_in_per_channel_rule_and_read_as_join_by_default() -> None:
    from rtcore.config import from_dict

    conf = from_dict(rules(history_size=50, history_ttl=30, join="signed_in"))
    (settings,) = conf.apps
    assert settings.history_retention("feed-1") == Retention(50, 30.0)
    assert settings.history_retention("other") is None
    assert settings.history_policy("feed-1") == "signed_in"
    assert from_dict(rules(history_size=5, history="anyone")).apps[0].history_policy("feed") == (
        "anyone"
    )
    assert from_dict(rules()).apps[0].history_retention("feed") is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"history_size": -1}, "history_size: must be an integer from 0 (no history) to 1000000"),
        ({"history_size": 1.5}, "history_size: must be an integer"),
        ({"history_size": 10**7}, "history_size: must be an integer"),
        ({"history_size": 5, "history_ttl": 0}, "history_ttl: must be"),
        ({"history_ttl": 10}, "history_ttl: set, but history_size is 0"),
        ({"history_size": 5, "history": "everyone"}, "history: must be one of"),
    ],
)
def test_bad_history_settings_name_the_key_and_rule(rule: dict[str, Any], message: str) -> None:
    from rtcore.config import ConfigError, from_dict

    with pytest.raises(ConfigError) as caught:
        from_dict(rules(**rule))
    assert f"apps[0].channels[0].{message}" in str(caught.value)


def test_the_settings_page_keeps_history_keys_of_a_rule() -> None:
    from rtcore.config.editor import edit

    text = '[[apps]]\nname = "a"\n\n[[apps.channels]]\npattern = "feed*"\nhistory_size = 10\n'
    rule = {"pattern": "feed*", "history_size": 20, "history_ttl": 60, "history": "nobody"}
    edited = edit(text, "a", {"channels": [rule]}, env={}, base=Path("."))
    assert edited.config.apps[0].channels[0].history_size == 20
    assert edited.config.apps[0].history_policy("feed") == "nobody"


@pytest.mark.parametrize("case", HISTORY_EXPIRY_CASES, ids=ids(HISTORY_EXPIRY_CASES))
def test_the_shared_history_expiry_cases(case: dict[str, Any]) -> None:
    """A message is gone at exactly its expiry instant (the Redis scripts run the same table:
    tests/integration/test_redis_scripts.py)."""
    store = MemoryHistory()
    retention = Retention(size=100, ttl=case["ttl"] / 1000)
    for i, published in enumerate(case["published"], 1):
        store.publish("app", "feed", msg(i), retention, published / 1000)
    found = store.read("app", "feed", since=None, limit=100, reverse=False, wall=case["now"] / 1000)
    assert offsets(found.entries) == case["held"]
