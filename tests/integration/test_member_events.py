"""member_* frames paused past a channel's member_events_max (protocol.md §5.2.2), over real
sockets: raw clients that know only member_* frames, and the Python client without diffs."""

from __future__ import annotations

from typing import Any

import trio

from rtcore.client import open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import RawClient

APP = AppConfig("a", channels=(ChannelRule("*", member_events_max=3),))


async def request(raw: RawClient, **obj: Any) -> list[Any]:
    """Send a request; the frames up to and including its reply."""
    await raw.send(**obj)
    frames = []
    while not frames or not isinstance(frames[-1], f.Ok | f.Err):
        frames.append(await raw.recv())
    return frames


async def mark(raw: RawClient, sender: RawClient, text: str) -> list[Any]:
    """The frames ``raw`` receives up to a ``msg`` sent now by ``sender``, another member
    (frames to one connection arrive in order: what came before it was all there was)."""
    reply = await request(sender, t="send", id=99, ch="room", ev="mark", data=text, echo=False)
    assert isinstance(reply[-1], f.Ok), reply
    frames = []
    while True:
        frame = await raw.recv()
        if isinstance(frame, f.Msg) and frame.data == text:
            return frames
        if not (isinstance(frame, f.Msg) and frame.event == "mark"):  # earlier marks
            frames.append(frame)


async def test_past_the_limit_member_clients_are_told_once_then_told_to_list_again(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    with trio.fail_after(20):
        raws = [await RawClient.connect(server.addresses[0]) for _ in range(5)]
        for raw in raws:
            assert isinstance(await raw.hello(app="a"), f.Welcome)
        a, b, c, d, e = raws
        for raw in (a, b, c):
            await request(raw, t="join", id=1, ch="room")
        assert [x.kind for x in await mark(a, b, "1")] == ["member_join", "member_join"]
        # The 4th member: it gets its ok, then the notice; the others the notice instead.
        joined = await request(d, t="join", id=1, ch="room")
        assert [type(x) for x in joined] == [f.Ok]
        assert await mark(d, b, "2") == [f.PresencePaused("room", 4, 3)]
        assert await mark(a, b, "3") == [f.PresencePaused("room", 4, 3)]
        # Nothing per member while paused: not a join, a profile, nor leaves above 1.
        await request(e, t="join", id=1, ch="room")
        assert await mark(e, b, "4") == [f.PresencePaused("room", 5, 3)]
        await request(b, t="profile", id=2, data={"n": 1})
        for raw in (e, d, c):
            await request(raw, t="leave", id=3, ch="room")
        assert await mark(a, b, "5") == []
        # Down to 1 member: resumed, and a listing is right; events flow again.
        await request(b, t="leave", id=3, ch="room")
        await request(c, t="join", id=4, ch="room")
        after = await mark(a, c, "6")
        assert after[0] == f.PresenceResumed("room", 1)
        assert [(x.kind, x.member["id"]) for x in after[1:]] == [("member_join", last_id(server))]
        listed = (await request(a, t="members", id=5, ch="room"))[-1].data["members"]
        assert sorted(m["id"] for m in listed) == sorted(
            m["id"] for m in server.members("a", "room")
        )
        assert len(listed) == 2


def last_id(server: Any) -> str:
    """The member id of the connection that joined the room last."""
    return str(server.members("a", "room")[-1]["id"])


async def test_the_python_client_without_diffs_reports_the_pause_and_relists_on_resume(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    with trio.fail_after(20):
        async with open_client(url(server), app="a", presence_diffs=False) as watcher:
            paused: list[f.PresencePaused] = []
            paused_once, resumed = trio.Event(), trio.Event()
            watcher.on_presence_paused(lambda event: (paused.append(event), paused_once.set()))
            watcher.on_presence_resumed(lambda event: resumed.set())
            await watcher.join("room")
            others = [await RawClient.connect(server.addresses[0]) for _ in range(4)]
            for raw in others:
                await raw.hello(app="a", profile={"n": 1})
                await request(raw, t="join", id=1, ch="room")
            await paused_once.wait()
            assert paused == [f.PresencePaused("room", 4, 3)]
            assert watcher.members("room") == []  # stale: emptied, as told
            for raw in others:  # down to 1 (half of 3): resumed
                await request(raw, t="leave", id=3, ch="room")
            await resumed.wait()
            await request(others[0], t="join", id=4, ch="room")  # heard as a member_join
            expected = sorted(m["id"] for m in server.members("a", "room"))
            for _ in range(200):  # the re-listing is on its way
                if sorted(m["id"] for m in watcher.members("room")) == expected:
                    break
                await trio.sleep(0.01)
            assert sorted(m["id"] for m in watcher.members("room")) == expected
            assert len(expected) == 2
