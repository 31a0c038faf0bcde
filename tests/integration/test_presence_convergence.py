"""Presence converges: every client's reconstructed member list equals the server's after
hundreds of members join, update and leave at once (protocol.md §5.2.1), with clients that
take batched diffs and clients that take one member_* frame per event in the same channel."""

from __future__ import annotations

import random
from typing import Any

import trio

from rtcore import Server
from rtcore.client import Client
from tests.integration.conftest import StartServer, url

ROOM = "room"
STAYERS = 150
CHURNERS = 150


def as_set(members: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(m["id"], repr(m["data"])) for m in members}


async def stay(
    server: Server, i: int, rng: random.Random, nursery: trio.Nursery, out: list[Client]
) -> None:
    """Join, list the members while others come and go, update the profile; stay."""
    client = Client(url(server), profile={"n": i}, reconnect=False, presence_diffs=i % 5 != 0)
    await client.open(nursery)
    out.append(client)
    await trio.sleep(rng.random() * 0.2)
    await client.join(ROOM)
    await client.get_members(ROOM, page_size=rng.choice([7, 50, 1000]))
    await trio.sleep(rng.random() * 0.2)
    await client.update_profile({"n": i, "v": 2})


async def churn(server: Server, i: int, rng: random.Random) -> None:
    """Join, maybe update, then leave and close, or just close (leaving by disconnect)."""
    client = Client(url(server), profile={"c": i}, reconnect=False, presence_diffs=i % 4 != 0)
    async with trio.open_nursery() as nursery:
        await client.open(nursery)
        await trio.sleep(rng.random() * 0.2)
        await client.join(ROOM)
        if i % 3 == 0:
            await client.update_profile({"c": i, "v": 2})
        if i % 2 == 0:
            await client.leave(ROOM)
        await client.aclose()


async def test_every_clients_member_list_converges_to_the_servers(
    start_server: StartServer,
) -> None:
    server = await start_server(connect_burst_per_ip=5000)
    rng = random.Random(12)
    stayers: list[Client] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as crowd:
                for i in range(STAYERS):
                    crowd.start_soon(stay, server, i, random.Random(rng.random()), clients, stayers)
                for i in range(CHURNERS):
                    crowd.start_soon(
                        _churn_and_keep, server, i, random.Random(rng.random()), clients
                    )
            # Quiescence: a msg is queued after every presence before it (§5.3), so once
            # every stayer has it, every stayer has had every presence frame.
            done = _on_sync(*stayers)
            await stayers[0].send(ROOM, "sync")
            for event in done:
                await event.wait()
            truth = server.apps["default"].table.members(ROOM)
            expected = {(m.id, repr(m.profile)) for m in truth.values()}
            assert len(expected) == STAYERS + CHURNERS // 6  # stayers and those who came back
            listed = await stayers[0].get_members(ROOM, page_size=1000)
            assert as_set(listed) == expected
            for c in stayers:
                assert as_set(c.members(ROOM)) == expected, c.presence_diffs
            clients.cancel_scope.cancel()


async def _churn_and_keep(
    server: Server, i: int, rng: random.Random, nursery: trio.Nursery
) -> None:
    """Every sixth churner leaves and joins again on the same connection (a leave and a join
    in the diffs), and stays: it runs in the long-lived nursery so it stays connected."""
    if i % 6 == 0:
        done = trio.Event()

        async def run() -> None:
            client = Client(url(server), profile={"c": i}, reconnect=False)
            await client.open(nursery)
            await trio.sleep(rng.random() * 0.2)
            await client.join(ROOM)
            await client.update_profile({"c": i, "v": 2})
            await client.leave(ROOM)
            await client.join(ROOM)
            done.set()

        nursery.start_soon(run)
        await done.wait()
    else:
        await churn(server, i, rng)


async def test_the_client_hands_diffs_to_its_handlers_one_member_at_a_time(
    start_server: StartServer,
) -> None:
    server = await start_server()
    seen: dict[bool, list[tuple[str, str, Any]]] = {True: [], False: []}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            watchers = {}
            for diffs in (True, False):
                w = Client(url(server), reconnect=False, presence_diffs=diffs, echo=False)
                for subscribe in (w.on_join, w.on_leave, w.on_update):
                    subscribe(
                        lambda e, log=seen[diffs]: log.append(
                            (e.kind, e.member["id"], e.member["data"])
                        )
                    )
                await w.open(nursery)
                await w.join(ROOM)
                watchers[diffs] = w
            assert watchers[True].welcome.features == ("presence_diffs", "history")  # type: ignore[union-attr]
            assert watchers[False].welcome.features == ("history",)  # type: ignore[union-attr]
            a = Client(url(server), reconnect=False, profile=1)
            await a.open(nursery)
            await a.join(ROOM)
            await a.update_profile(2)
            await a.leave(ROOM)
            synced = _on_sync(watchers[True], watchers[False])
            await watchers[True].send(
                ROOM, "sync", echo=True
            )  # after every presence before it (§5.3)
            for got in synced:
                await got.wait()
            both = [
                ("member_join", watchers[False].id, None),  # echo off: not its own
                ("member_join", a.id, 1),
                ("member_update", a.id, 2),
                ("member_leave", a.id, 2),
            ]
            assert seen[False] == both[1:]
            # The diff taker may see the joins and updates of one window folded, but the same
            # members come and go, in order, and it never sees its own events (echo off).
            kinds = [(k, i) for k, i, _ in seen[True]]
            assert kinds[0] == ("member_join", watchers[False].id)
            assert ("member_join", a.id) in kinds and kinds[-1] == ("member_leave", a.id)
            assert all(i != watchers[True].id for _, i in kinds)
            assert seen[True][-1][2] == 2  # the latest profile
            # Lists hold what each saw (a diff includes its own join, echo or not) until a
            # listing completes them.
            both_ids = {watchers[True].id, watchers[False].id}
            assert {m["id"] for m in watchers[True].members(ROOM)} == both_ids
            assert watchers[False].members(ROOM) == []
            for w in watchers.values():
                await w.get_members(ROOM)
                assert {m["id"] for m in w.members(ROOM)} == both_ids
            nursery.cancel_scope.cancel()


def _on_sync(*clients: Client) -> list[trio.Event]:
    events = []
    for c in clients:
        got = trio.Event()
        c.on("sync", lambda msg, got=got: got.set())
        events.append(got)
    return events
