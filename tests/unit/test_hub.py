"""The channel table against a simple model, as a hypothesis state machine; member paging
and the re-marking of a leaving member's queued messages."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rtcore.core.members import ChannelTable, Member
from rtcore.core.outbox import Outbox, Pending

CONNS = [f"c{i}" for i in range(6)]
USERS = [None, "alice", "bob"]
SESSIONS = [None, "s1", "s2"]
CHANNELS = ["a", "b", "c"]
POLICIES = ["anyone", "signed_in", "nobody", "granted", "token", "hook"]
PER_CONNECTION = ("granted", "token", "hook")
"""Presence values decided per connection: who has the channel in ``Member.watching``."""


class ChannelTableMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.pending = Pending()
        self.policies: dict[str, str] = {}  # channel -> presence policy (default anyone)
        self.table = ChannelTable(self.pending, lambda ch: self.policies.get(ch, "anyone"))
        self.members: dict[str, Member] = {}
        self.model: dict[str, set[str]] = {}  # channel -> conn ids

    @rule(
        conn=st.sampled_from(CONNS),
        user=st.sampled_from(USERS),
        session=st.sampled_from(SESSIONS),
        diffs=st.booleans(),
    )
    def connect(self, conn: str, user: str | None, session: str | None, diffs: bool) -> None:
        if conn in self.members:
            return
        session = session if user is not None else None
        self.members[conn] = Member(conn, user, {"n": conn}, Outbox(), session=session, diffs=diffs)
        self.table.connect(self.members[conn])

    @rule(conn=st.sampled_from(CONNS), session=st.sampled_from(SESSIONS))
    def refresh(self, conn: str, session: str | None) -> None:
        member = self.members.get(conn)
        if member is not None and member.user is not None:
            self.table.set_session(member, session)

    @rule(conn=st.sampled_from(CONNS), channel=st.sampled_from(CHANNELS), sees=st.booleans())
    def rights_change(self, conn: str, channel: str, sees: bool) -> None:
        """A connection's grants or channel token give or take the right to see a channel's
        presence: before its join (as a join sets it), or in the channel (a refresh)."""
        member = self.members.get(conn)
        if member is None:
            return
        if conn in self.model.get(channel, set()):
            self.table.rewatch(member, channel, sees)
            self.presence_reaches_whom_the_policy_says(channel)
        elif sees:
            member.watch(channel, True)
        else:
            member.watch(channel, False)

    @rule(channel=st.sampled_from(CHANNELS), policy=st.sampled_from(POLICIES))
    def set_presence_policy(self, channel: str, policy: str) -> None:
        self.policies[channel] = policy  # a reload

    @rule(channel=st.sampled_from(CHANNELS))
    def presence_reaches_whom_the_policy_says(self, channel: str) -> None:
        group = self.table.presence_group(channel)
        policy = self.policies.get(channel, "anyone")
        conns = self.model.get(channel, set())
        expected = {
            "anyone": conns,
            "signed_in": {c for c in conns if self.members[c].user is not None},
            "nobody": set(),
            "granted": {c for c in conns if channel in self.members[c].watching},
            "token": {c for c in conns if channel in self.members[c].watching},
            "hook": {c for c in conns if channel in self.members[c].watching},
        }[policy]
        assert list(group) == [c for c in self.table.members(channel) if c in expected]
        for diffs in (False, True):  # split by how each member takes presence
            receivers = self.table.presence_receivers(channel, diffs)
            assert list(receivers) == [c for c in group if self.members[c].diffs is diffs]

    def _users_in(self, channel: str) -> Counter[str | None]:
        return Counter(self.members[c].user for c in self.model.get(channel, ()))

    @rule(conn=st.sampled_from(CONNS), channel=st.sampled_from(CHANNELS))
    def join(self, conn: str, channel: str) -> None:
        if conn not in self.members:
            return
        member = self.members[conn]
        already = conn in self.model.get(channel, set())
        expected_first = member.user is None or self._users_in(channel)[member.user] == 0
        first = self.table.join(member, channel)
        if already:
            assert first is None
        else:
            assert first == expected_first
            self.model.setdefault(channel, set()).add(conn)
            self.presence_reaches_whom_the_policy_says(channel)  # as the app publishes

    @rule(conn=st.sampled_from(CONNS), channel=st.sampled_from(CHANNELS))
    def leave(self, conn: str, channel: str) -> None:
        if conn not in self.members:
            return
        member = self.members[conn]
        was_in = conn in self.model.get(channel, set())
        expected_last = member.user is None or self._users_in(channel)[member.user] == 1
        last = self.table.leave(member, channel)
        if not was_in:
            assert last is None
        else:
            assert last == expected_last
            self.model[channel].discard(conn)
            if not self.model[channel]:
                del self.model[channel]
            self.presence_reaches_whom_the_policy_says(channel)

    @rule(conn=st.sampled_from(CONNS))
    def disconnect(self, conn: str) -> None:
        member = self.members.pop(conn, None)
        if member is None:
            return
        left = dict(self.table.disconnect(member))
        expected = {ch for ch, conns in self.model.items() if conn in conns}
        assert set(left) == expected
        for ch in expected:
            self.model[ch].discard(conn)
            if not self.model[ch]:
                del self.model[ch]
        assert conn not in self.table.everyone

    @rule(channel=st.sampled_from(CHANNELS), sender=st.sampled_from(CONNS), echo=st.booleans())
    def deliver(self, channel: str, sender: str, echo: bool) -> None:
        for m in self.members.values():
            m.outbox.items.clear()
        skip = None if echo else self.members.get(sender)
        frame = b"frame"
        count = self.table.deliver(self.table.members(channel), frame, skip)
        expected = set(self.model.get(channel, set()))
        if skip is not None:
            expected.discard(sender)
        assert count == len(expected)
        for conn, m in self.members.items():
            assert m.outbox.items == ([frame] if conn in expected else [])

    @rule(channel=st.sampled_from(CHANNELS), limit=st.integers(1, 4))
    def paging_lists_every_member_once_in_join_order(self, channel: str, limit: int) -> None:
        seen: list[str] = []
        after = None
        for _ in range(len(CONNS) + 1):
            page, after = self.table.page(channel, after, limit)
            assert len(page) <= limit
            seen.extend(m.id for m in page)
            if after is None:
                break
        assert seen == list(self.table.members(channel))
        assert set(seen) == self.model.get(channel, set())

    @rule(channel=st.sampled_from(CHANNELS), after=st.integers(0, 60), limit=st.integers(1, 4))
    def a_page_after_any_cursor_is_the_next_joiners(
        self, channel: str, after: int, limit: int
    ) -> None:
        page, cursor = self.table.page(channel, after, limit)
        later = [m for m in self.table.members(channel).values() if m.channels[channel] > after]
        assert page == later[:limit]
        assert cursor == (page[-1].channels[channel] if len(later) > limit else None)

    @invariant()
    def table_matches_model(self) -> None:
        if not hasattr(self, "table"):
            return
        channels = self.table.channels()
        assert {ch: set(g) for ch, g in channels.items()} == self.model
        assert all(channels.values()), "no empty channel is kept"
        for conn, m in self.members.items():
            assert set(m.channels) == {ch for ch, c in self.model.items() if conn in c}
        assert set(self.table.everyone) == set(self.members)
        for (channel, user), count in self.table._user_conns.items():
            assert count == self._users_in(channel)[user] > 0
        # the paging index holds exactly each group's members, in join order
        assert set(self.table._order) == set(channels)
        for ch, group in channels.items():
            order = list(self.table._order[ch])
            assert order == list(group.values())
            seqs = [m.channels[ch] for m in order]
            assert seqs == sorted(set(seqs))
        # a kept signed-in group holds exactly the channel's signed-in members
        for ch, signed_in in self.table._signed_in.items():
            assert ch in channels
            assert list(signed_in) == [k for k, m in channels[ch].items() if m.user is not None]
        # a kept watching group holds exactly the members whose rights see its presence
        for ch, watching in self.table._watching.items():
            assert ch in channels
            assert list(watching) == [k for k, m in channels[ch].items() if ch in m.watching]
        # diff takers are counted; a kept split holds what its policy admits, by kind
        counts = {ch: sum(m.diffs for m in g.values()) for ch, g in channels.items()}
        assert self.table._diff_members == {ch: n for ch, n in counts.items() if n}
        for ch, split in self.table._split.items():
            assert ch in channels
            admitted = [
                m
                for m in channels[ch].values()
                if split.policy == "anyone"
                or (split.policy == "signed_in" and m.user)
                or (split.policy in PER_CONNECTION and ch in m.watching)
            ]
            for diffs in (False, True):
                assert list(split.sides[diffs]) == [m.id for m in admitted if m.diffs is diffs]
        # sessions are indexed by (user, session)
        expected_sessions: dict[tuple[str, str], set[str]] = {}
        for conn, m in self.members.items():
            if m.user is not None and m.session is not None:
                expected_sessions.setdefault((m.user, m.session), set()).add(conn)
        assert {k: set(v) for k, v in self.table._sessions.items()} == expected_sessions


TestChannelTable = ChannelTableMachine.TestCase
# More examples than the default 100: a bug may need a policy change, then joins and leaves of
# the right members, before an invariant can see it.
TestChannelTable.settings = settings(max_examples=200)


# -- paging while members come and go ----------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "page"]), st.integers(0, 39)), max_size=120
)


@given(initial=st.integers(0, 30), steps=events, limit=st.integers(1, 5))
def test_paging_amid_joins_and_leaves_lists_each_steady_member_once_in_join_order(
    initial: int, steps: list[tuple[str, int]], limit: int
) -> None:
    table = ChannelTable(Pending())
    members = [Member(f"m{i:02d}", None, None, Outbox()) for i in range(40)]
    for m in members:
        table.connect(m)
    for m in members[:initial]:
        table.join(m, "ch")
    present_at_start = {m.id for m in members[:initial]}
    left: set[str] = set()
    seen: list[Member] = []
    cursor: int | None = None
    done = False
    for action, i in [*steps, *[("page", 0)] * 50]:  # then page on to the end
        if action == "join":
            table.join(members[i], "ch")
        elif action == "leave" and table.leave(members[i], "ch") is not None:
            left.add(members[i].id)
        elif action == "page" and not done:
            page, cursor = table.page("ch", cursor, limit)
            assert len(page) <= limit
            seen.extend(page)
            done = cursor is None
    assert done
    ids = [m.id for m in seen]
    steady = present_at_start - left  # present throughout the paging
    assert all(ids.count(i) == 1 for i in steady), "each steady member is listed exactly once"
    # (one who left and joined again is a new membership and may be listed again)
    order = [m.channels.get("ch") for m in seen if m.id in steady]
    assert order == sorted(order), "in join order"


def test_a_leaving_member_with_queued_messages_is_still_flushed() -> None:
    pending = Pending()
    table = ChannelTable(pending)
    stay, go = Member("stay", None, None, Outbox()), Member("go", None, None, Outbox())
    for m in (stay, go):
        table.connect(m)
        table.join(m, "ch")
    table.deliver(table.members("ch"), b"frame")
    table.leave(go, "ch")  # before the flush pass: the group no longer lists it
    outboxes, groups = pending.take()
    visited = outboxes | {m.outbox for g in groups for m in g.values()}
    assert go.outbox in visited and stay.outbox in visited
    assert go.outbox.items == [b"frame"]


def test_a_leaving_member_with_nothing_queued_is_not_marked() -> None:
    pending = Pending()
    table = ChannelTable(pending)
    m = Member("m", None, None, Outbox())
    table.connect(m)
    table.join(m, "ch")
    table.leave(m, "ch")
    assert pending.take() == (set(), [])


PEOPLE = [("0", None), ("1", "a"), ("2", "b")]


def test_a_kept_signed_in_presence_group_follows_joins_and_leaves() -> None:
    policy = {"ch": "signed_in"}
    table = ChannelTable(Pending(), lambda ch: policy[ch])
    anon, ann, bob = (Member(i, u, None, Outbox()) for i, u in PEOPLE)
    for m in (anon, ann):
        table.connect(m)
        table.join(m, "ch")
    assert list(table.presence_group("ch")) == ["1"]  # built on first use
    table.connect(bob)
    table.join(bob, "ch")
    assert list(table.presence_group("ch")) == ["1", "2"]  # kept by join...
    table.leave(ann, "ch")
    assert list(table.presence_group("ch")) == ["2"]  # ...and by leave
    policy["ch"] = "anyone"  # a reload: the channel group itself, the extra one dropped
    assert table.presence_group("ch") is table.members("ch") and not table._signed_in
    policy["ch"] = "nobody"
    assert dict(table.presence_group("ch")) == {}


def test_a_mixed_channel_splits_presence_receivers_by_kind_under_its_policy() -> None:
    policy = {"ch": "signed_in"}
    table = ChannelTable(Pending(), lambda ch: policy[ch])
    old, new = Member("1", "a", None, Outbox()), Member("2", "b", None, Outbox(), diffs=True)
    for m in (old, new):
        table.connect(m)
        table.join(m, "ch")
    assert list(table.presence_receivers("ch", diffs=True)) == ["2"]  # split on first use
    assert list(table.presence_receivers("ch", diffs=False)) == ["1"]
    anon = Member("3", None, None, Outbox(), diffs=True)
    late = Member("4", "c", None, Outbox(), diffs=True)
    for m in (anon, late):
        table.connect(m)
        table.join(m, "ch")
    assert list(table.presence_receivers("ch", diffs=True)) == ["2", "4"]  # kept by join
    table.leave(new, "ch")
    assert list(table.presence_receivers("ch", diffs=True)) == ["4"]  # and by leave
    policy["ch"] = "anyone"  # a reload: rebuilt
    assert list(table.presence_receivers("ch", diffs=True)) == ["3", "4"]
    table.leave(old, "ch")  # no longer mixed: the presence group serves the diff takers
    assert table.presence_receivers("ch", diffs=True) is table.members("ch")
    assert dict(table.presence_receivers("ch", diffs=False)) == {}


class _NoScan(dict[str, Member]):
    """A channel group that fails the test if anything iterates it."""

    def values(self) -> Any:
        raise AssertionError("the page scanned the channel group")

    def __iter__(self) -> Any:
        raise AssertionError("the page scanned the channel group")


def test_a_page_at_any_depth_does_not_scan_the_channel() -> None:
    table = ChannelTable(Pending())
    members = [Member(f"m{i:05d}", None, None, Outbox()) for i in range(5000)]
    for m in members:
        table.connect(m)
        table.join(m, "ch")
    table._channels["ch"] = _NoScan(table._channels["ch"])
    cursor = members[4900].channels["ch"]
    page, after = table.page("ch", cursor, 50)
    assert page == members[4901:4951] and after == members[4950].channels["ch"]
    assert table.page("ch", after, 50) == (members[4951:], None)


def test_a_per_connection_presence_group_follows_rights_joins_and_leaves() -> None:
    table = ChannelTable(Pending(), lambda ch: "granted")
    ann, bob, cat = (Member(c, c, None, Outbox()) for c in ("ann", "bob", "cat"))
    ann.watch("ch", True)
    for m in (ann, bob):
        table.connect(m)
        table.join(m, "ch")
    assert list(table.presence_group("ch")) == ["ann"]
    table.rewatch(bob, "ch", True)  # a refresh gave bob the right
    assert list(table.presence_group("ch")) == ["ann", "bob"]
    table.rewatch(ann, "ch", False)  # ...and took ann's
    assert list(table.presence_group("ch")) == ["bob"]
    cat.watch("ch", True)
    table.connect(cat)
    table.join(cat, "ch")  # a kept group follows joins
    assert list(table.presence_group("ch")) == ["bob", "cat"]
    table.leave(bob, "ch")
    assert list(table.presence_group("ch")) == ["cat"]


def test_a_member_shares_its_empty_tables_until_it_needs_its_own() -> None:
    """Idle connections are what a server has most of: a member holds no set or dict of its
    own for the presence it watches and the infos it has until it has one."""
    a, b = Member("a", None, None, Outbox()), Member("b", None, None, Outbox())
    assert a.watching is b.watching and a.channel_info is b.channel_info
    a.watch("x", True)
    a.set_info("x", {"role": "host"})
    assert a.watching == {"x"} and a.channel_info == {"x": {"role": "host"}}
    assert b.watching == frozenset() and dict(b.channel_info) == {}
    a.watch("x", False)
    a.set_info("x", None)
    assert a.watching == frozenset() and a.channel_info is b.channel_info
