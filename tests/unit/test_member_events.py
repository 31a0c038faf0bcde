"""member_* frames paused past a channel's member_events_max (protocol.md §5.2.2), without I/O."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcore.config import AppConfig, ChannelRule
from rtcore.core.member_events import resume_level
from rtcore.core.session.session import Session
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, take

DIFFS = {"features": ["presence_diffs"]}


def world_with(limit: int) -> World:
    rules = (ChannelRule("*", member_events_max=limit),)
    return World(apps=(AppConfig("default", channels=rules),))


def request(s: Session, **obj: Any) -> list[Any]:
    """Send one request; every frame queued for the connection, the reply among them."""
    assert s.receive(msgpack.packb(obj), MONO, NOW) is None
    return take(s)


def kinds(frames: list[Any]) -> list[str]:
    return [getattr(x, "kind", None) or type(x).__name__ for x in frames]


def test_past_the_limit_member_frames_pause_and_come_back_at_half_of_it() -> None:
    world = world_with(3)
    a, b, c, d, e = (world.session() for _ in range(5))
    for s in (a, b, c):
        request(s, t="join", id=1, ch="lobby")
    assert kinds(take(a)) == ["member_join", "member_join"]  # b's and c's
    take(b), take(c)
    # d is the 4th member: the others are told once, instead of its member_join...
    assert kinds(request(d, t="join", id=1, ch="lobby")) == ["Ok", "PresencePaused"]
    for s in (a, b, c):
        assert take(s) == [f.PresencePaused("lobby", 4, 3)]
    # ...and then hear nothing of the channel: not e's join, not a profile, not a leave.
    assert request(e, t="join", id=1, ch="lobby")[1:] == [f.PresencePaused("lobby", 5, 3)]
    request(a, t="profile", id=2, data={"n": 1})
    request(e, t="leave", id=2, ch="lobby")  # echo on: not even its own leave
    request(d, t="leave", id=2, ch="lobby")
    request(c, t="leave", id=2, ch="lobby")  # 2 left: above half of 3 (1)
    assert [take(s) for s in (a, b, c, d, e)] == [[], [], [], [], []]
    # b's leave takes it to 1: a is told to list again, and hears everything after.
    request(b, t="leave", id=2, ch="lobby")
    assert take(a) == [f.PresenceResumed("lobby", 1)]
    request(e, t="join", id=3, ch="lobby")
    assert kinds(take(a)) == ["member_join"]
    listed = request(a, t="members", id=4, ch="lobby")[-1].data["members"]
    assert sorted(m["id"] for m in listed) == ["c1", "c5"]


def test_diff_takers_never_pause_and_a_mixed_channel_pauses_only_the_others() -> None:
    world = world_with(2)
    old, new, third = world.session(), world.session(DIFFS), world.session(DIFFS)
    for s in (old, new, third):
        request(s, t="join", id=1, ch="lobby")
    world.pending.take()  # the flusher's pass: the diffs go out
    assert kinds(take(old)) == ["member_join", "PresencePaused"]
    joined = [x for x in take(new) if isinstance(x, f.PresenceDiff)]
    assert [m["id"] for x in joined for m in x.joins or ()] == ["c2", "c3"]
    assert not any(isinstance(x, f.PresencePaused | f.PresenceResumed) for x in take(third))


def test_the_hysteresis_keeps_a_channel_at_the_limit_from_flapping() -> None:
    world = world_with(4)
    watcher, *others = (world.session() for _ in range(6))
    for s in (watcher, *others[:3]):  # 4 members: at the limit
        request(s, t="join", id=1, ch="room")
    take(watcher)
    for _ in range(5):  # one member in and out at the limit: paused once, never resumed
        request(others[4], t="join", id=1, ch="room")
        request(others[4], t="leave", id=2, ch="room")
    assert take(watcher) == [f.PresencePaused("room", 5, 4)]
    assert resume_level(4) == 2 and resume_level(1) == 1 and resume_level(1000) == 500


def test_the_presence_permission_and_presence_events_still_decide_who_is_told() -> None:
    rules = (
        ChannelRule("vip", presence="signed_in", member_events_max=1),
        ChannelRule("quiet", presence_events=False, member_events_max=1),
    )
    world = World(apps=(AppConfig("default", channels=rules),))
    a, b = world.session(), world.session()
    for channel in ("vip", "quiet"):
        request(a, t="join", id=1, ch=channel)
        assert request(b, t="join", id=1, ch=channel)[1:] == []  # anonymous / events off
    assert take(a) == []


def test_a_server_side_add_to_a_paused_channel_is_told_after_the_joined_frame() -> None:
    from rtcore.core import membership

    world = world_with(1)
    app = world.apps["default"]
    a, b = world.session(), world.session()
    request(a, t="join", id=1, ch="lobby")
    assert b.member is not None
    membership.add(app, b.member, "lobby", "added", 128, NOW)
    assert kinds(take(b)) == ["Joined", "PresencePaused"]
    assert take(a) == [f.PresencePaused("lobby", 2, 1)]


# -- what a member_* client reconstructs ------------------------------------------------------


class Watcher:
    """A client written from protocol.md that keeps a member list from member_* frames."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.members: dict[str, Any] | None = None
        """member id -> profile; None: not a member."""
        self.paused = False

    def apply(self, frames: list[Any], after_ok: bool = True) -> None:
        relist = False
        for x in frames:
            if isinstance(x, f.MemberEvent) and x.channel == "room":
                assert not self.paused, "a member_* frame while paused"
                if self.members is None:
                    continue  # before its join's ok: the listing that follows covers it
                if x.kind == "member_leave":
                    self.members.pop(x.member["id"], None)
                else:
                    self.members[x.member["id"]] = x.member["data"]
            elif isinstance(x, f.PresencePaused):
                assert not self.paused and self.members is not None
                self.paused = True
            elif isinstance(x, f.PresenceResumed):
                assert self.paused
                self.paused, relist = False, True
                self.members = {}
        if relist:
            self.relist()

    def relist(self) -> None:
        reply = request(self.session, t="members", id=9, ch="room", limit=1000)
        assert isinstance(reply[-1], f.Ok)
        self.apply(reply[:-1])
        assert self.members is not None
        for m in reply[-1].data["members"]:
            self.members[m["id"]] = m["data"]


OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "profile", "close"]), st.integers(0, 7)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(limit=st.integers(1, 4), operations=OPERATIONS, diffs=st.sets(st.integers(0, 7)))
def test_a_member_client_list_is_right_whenever_it_was_not_told_otherwise(
    limit: int, operations: list[tuple[str, int]], diffs: set[int]
) -> None:
    world = world_with(limit)
    app = world.apps["default"]
    sessions = [world.session(DIFFS if i in diffs else None) for i in range(8)]
    watchers = [Watcher(s) for s in sessions]
    closed: set[int] = set()
    for step, (op, i) in enumerate(operations):
        s, w = sessions[i], watchers[i]
        if i in closed:
            continue
        if op == "join" and w.members is None:
            frames = request(s, t="join", id=1, ch="room")
            w.members = {}
            ok_at = next(n for n, x in enumerate(frames) if isinstance(x, f.Ok))
            w.apply(frames[ok_at + 1 :])
            if not w.paused:
                w.relist()  # a client lists the channel after joining
        elif op == "leave" and w.members is not None:
            request(s, t="leave", id=2, ch="room", echo=False)
            w.members, w.paused = None, False
        elif op == "profile":  # its own member_update (echo) comes before the ok
            w.apply(
                [x for x in request(s, t="profile", id=3, data=step) if not isinstance(x, f.Ok)]
            )
        elif op == "close":
            s.disconnected()
            closed.add(i)
            w.members = None
        world.pending.take()
        real = {m.id: m.profile for m in app.table.members("room").values()}
        for j, other in enumerate(watchers):
            if j in closed or j in diffs:
                continue
            other.apply(take(other.session))
            if other.members is not None and not other.paused:
                assert other.members == real, (step, j)
            if other.members is not None:
                assert other.paused == app.member_events.paused("room")
                # paused only above half the limit; never above the limit unpaused
                assert len(real) > resume_level(limit) if other.paused else len(real) <= limit


# -- the setting -------------------------------------------------------------------------------


def test_member_events_max_is_read_bounded_and_defaults_to_1000() -> None:
    import pytest

    from rtcore import config as cfg

    def app(**rule: object) -> cfg.AppConfig:
        raw = {"apps": [{"name": "a", "channels": [{"pattern": "big-*", **rule}]}]}
        return cfg.from_dict(raw).apps[0]

    assert app(member_events_max=50).member_events_max("big-1") == 50
    assert app().member_events_max("big-1") == 1000  # the rule sets none
    assert app(member_events_max=50).member_events_max("other") == 1000  # no rule matches
    for bad in (0, -1, 100_001, 1.5, "10", True):
        with pytest.raises(cfg.ConfigError, match=r"channels\[0\]\.member_events_max: must be"):
            app(member_events_max=bad)
