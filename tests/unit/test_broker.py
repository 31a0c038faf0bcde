"""The broker seam: every publication of an app goes through its broker, to the right target."""

from __future__ import annotations

from rtcore.app import App, MessageIds
from rtcore.broker import MemoryBroker, Publication, Target, deliver_local
from rtcore.config import AppConfig
from rtcore.hub import ChannelTable, Member
from rtcore.outbox import Outbox, Pending

NOW = 1_700_000_000.0


class RecordingBroker(MemoryBroker):
    """Delivers locally, like MemoryBroker, and remembers what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Publication] = []

    def publish(self, publication: Publication) -> int:
        self.seen.append(publication)
        return super().publish(publication)


def test_messages_presence_and_user_events_all_go_through_the_broker() -> None:
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
        (Target.PRESENCE, "room", None),  # ann's join, echoed to her
        (Target.PRESENCE, "room", "c2"),  # bob's join, not echoed
        (Target.CHANNEL, "room", "c2"),  # bob's send without echo
        (Target.APP, None, None),
        (Target.USER, "ann", None),
        (Target.PRESENCE, "room", None),  # bob's leave on disconnect
    ]
    assert all(p.app == "a" for p in broker.seen)


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
