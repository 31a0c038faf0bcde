"""The broker seam: every publication of an app goes through its broker, to the right target."""

from __future__ import annotations

from rtcore.config import AppConfig
from rtcore.core.app import App, MessageIds
from rtcore.core.members import ChannelTable, Member
from rtcore.core.outbox import Outbox, Pending
from rtcore.engines.base import Publication, Target, deliver_local
from rtcore.engines.memory import MemoryBroker

NOW = 1_700_000_000.0


class RecordingBroker(MemoryBroker):
    """Delivers locally, like MemoryBroker, and remembers what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Publication] = []

    def publish(self, publication: Publication) -> int:
        self.seen.append(publication)
        return super().publish(publication)


def test_messages_and_broadcasts_go_through_the_broker_presence_stays_on_the_node() -> None:
    broker = RecordingBroker()
    app = App(AppConfig("a"), Pending(), MessageIds("n"), broker)
    ann = Member("c1", "ann", None, Outbox(), session="s1")
    bob = Member("c2", None, None, Outbox())
    for m in (ann, bob):
        app.connect(m)
    app.join(ann, "room", echo=True)
    app.join(bob, "room", echo=False)
    assert app.send("room", "e", 1, wall=NOW, sender=bob, echo=False).recipients == 1
    app.broadcast("e", 2, wall=NOW)
    app.publish_user_event("ann", "signin", {"id": "s1"}, None, 0.0, NOW)
    app.disconnect(bob)
    assert [(p.target, p.name, p.skip) for p in broker.seen] == [
        (Target.CHANNEL, "room", "c2"),  # bob's send without echo
        (Target.APP, None, None),
    ]
    assert all(p.app == "a" for p in broker.seen)
    # Presence and the user event were delivered on the node all the same.
    assert len(ann.outbox.items) == 6  # joins of both, the send, broadcast, event, bob leaving


class SharedBroker(RecordingBroker):
    """A shared broker's side of the seam, recorded (no other node)."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, ...]] = []

    def presence(self, app: str, kind: str, channel: str, member: Member, skip: str | None) -> None:
        self.calls.append(("presence", kind, channel, member.id, skip))

    def want(self, app: str, channel: str) -> None:
        self.calls.append(("want", channel))

    def unwant(self, app: str, channel: str) -> None:
        self.calls.append(("unwant", channel))

    def control(self, app: str, op: str, args: object) -> None:
        self.calls.append(("control", op))

    def revoke(self, app: str, user: str, session: str, until: float) -> None:
        self.calls.append(("revoke", user, session, until))


def test_a_shared_broker_gets_presence_subscriptions_control_and_revocations() -> None:
    broker = SharedBroker()
    app = App(AppConfig("a", revocation_ttl=60.0), Pending(), MessageIds("n"), broker)
    ann = Member("c1", "ann", None, Outbox(), session="s1")
    bob = Member("c2", None, None, Outbox())
    for m in (ann, bob):
        app.connect(m)
    app.join(ann, "room", echo=True)
    app.join(bob, "room", echo=False)
    app.update_profile(bob, {"n": 1}, echo=False)
    app.publish_user_event("ann", "signout", {"id": "s1"}, None, 0.0, NOW)
    app.leave(ann, "room", echo=False)
    app.disconnect(bob)
    assert broker.calls == [
        ("want", "room"),  # the node's first member of the channel: subscribe
        ("presence", "member_join", "room", "c1", None),
        ("presence", "member_join", "room", "c2", "c2"),
        ("presence", "member_update", "room", "c2", "c2"),
        ("control", "user_event"),  # the other nodes apply the sign-out too...
        ("revoke", "ann", "s1", NOW + 60.0),  # ...and refuse the session, later nodes too
        ("presence", "member_leave", "room", "c1", None),
        ("presence", "member_leave", "room", "c2", None),
        ("unwant", "room"),  # its last member here left
    ]
    # Presence events come from the cluster (App.presence_event), not from the join itself.
    assert bob.outbox.items == [] and len(ann.outbox.items) == 1  # the user event only


def test_deliver_local_reaches_each_kind_of_target() -> None:
    table = ChannelTable(Pending())
    a = Member("c1", "ann", None, Outbox(), session="s1")
    b = Member("c2", "ann", None, Outbox(), session="s2")
    c = Member("c3", None, None, Outbox())
    for m in (a, b, c):
        table.connect(m)
    d = Member("c4", "bob", None, Outbox(), session="s2")  # bob's s2 is not ann's
    table.connect(d)
    for m in (a, b, c):
        table.join(m, "room")
    cases = [
        (Target.CHANNEL, "room", None, {"c1", "c2", "c3"}),
        (Target.PRESENCE, "room", "c1", {"c2", "c3"}),
        (Target.APP, None, "c1", {"c2", "c3", "c4"}),
        (Target.USER, "ann", None, {"c1", "c2"}),
        (Target.SESSION, "s2", None, {"c2"}),
        (Target.USER, "nobody", None, set()),
    ]
    for target, name, skip, expected in cases:
        for m in (a, b, c, d):
            m.outbox.items.clear()
        user = "ann" if target is Target.SESSION else None
        count = deliver_local(table, Publication("a", target, name, b"x", skip, user))
        assert count == len(expected)
        assert {m.id for m in (a, b, c, d) if m.outbox.items == [b"x"]} == expected
