"""The whole tour with two real clients on a real loopback server, under trio and under
asyncio (see ``backends.py``)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from rtcore.client import Client, Connected, MemberEvent, Msg, open_client
from tests.integration.backends import TrioSide, both_backends
from tests.integration.conftest import url


async def next_of(it: Any, kind: type) -> Any:
    """The next event of ``kind`` from an event iterator (others are returned too, skipped)."""
    async for event in it:
        if isinstance(event, kind):
            return event
    raise AssertionError("iterator ended")


@both_backends
async def test_the_tour(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with (
            open_client(url(server), profile={"name": "ann"}) as ann,
            open_client(url(server), profile={"name": "bob"}, echo=False) as bob,
        ):
            ann_events = ann.events()
            bob_joins: list[MemberEvent] = []
            bob_leaves: list[MemberEvent] = []
            bob_updates: list[MemberEvent] = []
            bob_msgs: list[Msg] = []
            bob.on_join(bob_joins.append)
            two_leaves = anyio.Event()

            def on_leave(event: MemberEvent) -> None:
                bob_leaves.append(event)
                if len(bob_leaves) == 2:
                    two_leaves.set()

            bob.on_leave(on_leave)
            bob.on_update(bob_updates.append)
            bob.on("chat", bob_msgs.append)

            # join: echo on for ann (she sees her own join), off for bob
            assert await bob.join("lobby") is True
            assert await ann.join("lobby") is True
            own = await next_of(ann_events, MemberEvent)
            assert (own.kind, own.member["id"], own.first) == ("member_join", ann.id, True)
            # members
            members = await ann.get_members("lobby")
            assert members == [
                {"id": bob.id, "user": None, "data": {"name": "bob"}},
                {"id": ann.id, "user": None, "data": {"name": "ann"}},
            ]
            # profile update reaches the other member and the member list
            assert await ann.update_profile({"name": "ann", "status": "busy"}) == 1
            update = await next_of(ann_events, MemberEvent)  # her own, echo on
            assert update.kind == "member_update"
            # send with echo (ann's default) and without
            r1 = await ann.send("lobby", "chat", {"text": "hi"})
            r2 = await ann.send("lobby", "chat", {"text": "quiet"}, echo=False)
            assert (r1["recipients"], r2["recipients"]) == (2, 1)
            own_msg = await next_of(ann_events, Msg)
            assert (own_msg.data, own_msg.mid, own_msg.sender) == (
                {"text": "hi"},
                r1["mid"],
                ann.id,
            )
            # bob sends without echo (his default), then broadcasts with echo forced on
            await bob.send("lobby", "chat", {"text": "yo"})
            b = await bob.broadcast("alert", [1, 2], echo=True)
            got = await next_of(ann_events, Msg)
            assert (got.channel, got.event, got.data, got.sender) == (
                "lobby",
                "chat",
                {"text": "yo"},
                bob.id,
            )
            got = await next_of(ann_events, Msg)
            assert (got.channel, got.event, got.data, got.mid) == (None, "alert", [1, 2], b["mid"])
            # leave: bob hears it
            assert await ann.leave("lobby") is True
            assert await ann.get_members("lobby") == [
                {"id": bob.id, "user": None, "data": {"name": "bob"}}
            ]
            await ann.join("lobby")
            await anyio.lowlevel.checkpoint()  # let bob's reader catch up before ann disconnects
            ann_id = ann.id
            await ann.aclose()  # disconnect counts as leaving
            await two_leaves.wait()

    assert [(e.kind, e.member["id"]) for e in bob_joins] == [
        ("member_join", ann_id),
        ("member_join", ann_id),
    ]
    assert [e.member["data"] for e in bob_updates] == [{"name": "ann", "status": "busy"}]
    assert [m.data for m in bob_msgs] == [{"text": "hi"}, {"text": "quiet"}]
    assert [(e.kind, e.member["id"], e.last) for e in bob_leaves] == [
        ("member_leave", ann_id, True),
        ("member_leave", ann_id, True),
    ]


@both_backends
async def test_the_host_app_sends_broadcasts_and_lists_members_in_process(side: TrioSide) -> None:
    server = await side.start_server()
    with anyio.fail_after(10):
        async with open_client(url(server), profile="p") as c:
            await c.join("news")
            events = c.events()
            sent = await side.call(server.send, "default", "news", "headline", {"n": 1})
            assert sent["recipients"] == 1
            msg = await next_of(events, Msg)
            assert (msg.event, msg.data, msg.sender, msg.mid) == (
                "headline",
                {"n": 1},
                None,
                sent["mid"],
            )
            await side.call(server.broadcast, "default", "all", None)
            msg = await next_of(events, Msg)
            assert (msg.channel, msg.event) == (None, "all")
            members = await side.call(server.members, "default", "news")
            assert members == [{"id": c.id, "user": None, "data": "p"}]


@both_backends
async def test_connected_event_is_first_on_a_fresh_iterator_after_reconnect(
    side: TrioSide,
) -> None:
    """The client runs in the backend's own nursery (trio's, or an asyncio.TaskGroup)."""
    server = await side.start_server()
    with anyio.fail_after(10):
        client = Client(url(server), backoff_initial=0.01)
        async with side.native_task_group() as nursery:
            await client.open(nursery)
            events = client.events()
            first_id = client.id
            conn = server.connections[first_id]  # type: ignore[index]
            await side.call(conn.request_close, 1011, "test: drop it")
            connected = await next_of(events, Connected)
            assert connected.reconnected and connected.conn != first_id
            await client.aclose()
