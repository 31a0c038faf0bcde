"""The channel table against a simple model, as a hypothesis state machine."""

from __future__ import annotations

from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rtcore.hub import ChannelTable, Member
from rtcore.outbox import Outbox, Pending

CONNS = [f"c{i}" for i in range(6)]
USERS = [None, "alice", "bob"]
CHANNELS = ["a", "b", "c"]


class ChannelTableMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.pending = Pending()
        self.table = ChannelTable(self.pending)
        self.members: dict[str, Member] = {}
        self.model: dict[str, set[str]] = {}  # channel -> conn ids

    @rule(conn=st.sampled_from(CONNS), user=st.sampled_from(USERS))
    def connect(self, conn: str, user: str | None) -> None:
        if conn in self.members:
            return
        self.members[conn] = Member(conn, user, {"n": conn}, Outbox())
        self.table.connect(self.members[conn])

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


TestChannelTable = ChannelTableMachine.TestCase
