"""Channel rules with real clients: who may list members and who receives presence; and the
outbound budget for replies against a pipelined burst from a raw connection."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio
from wsproto.events import Message

from rtcore import CloseCode
from rtcore.client import Client, RequestError, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import SessionSettings
from rtcore.protocol import codec
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import RawClient

SECRET = "p" * 32
APP = AppConfig(
    "a",
    session=SessionSettings(key=SECRET),
    channels=(
        ChannelRule("vip-*", presence="signed_in"),
        ChannelRule("quiet-*", presence="nobody"),
    ),
)


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": 4_000_000_000}, SECRET, "HS256")


class Recorder:
    """Presence events a client received, up to a marker message (frames arrive in order)."""

    def __init__(self, client: Client) -> None:
        self.presence: list[tuple[str, str, str | None]] = []
        self.marked = trio.Event()
        for subscribe in (client.on_join, client.on_leave, client.on_update):
            subscribe(self._record)
        client.on("marker", lambda msg: self.marked.set())

    def _record(self, event: f.MemberEvent) -> None:
        if not self.marked.is_set():  # (the clients' own leaves as the test ends come later)
            self.presence.append((event.kind, event.channel, event.member["user"]))


async def test_presence_and_member_listings_follow_channel_rules(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    with trio.fail_after(10):
        async with (
            open_client(url(server), app="a") as anon,
            open_client(url(server), app="a", token=token("ann")) as ann,
        ):
            heard = {"anon": Recorder(anon), "ann": Recorder(ann)}
            for client in (ann, anon):
                for channel in ("vip-1", "quiet-1", "lobby"):
                    await client.join(channel)
            await anon.update_profile({"mood": "curious"})
            with pytest.raises(RequestError) as refused:
                await anon.get_members("vip-1")
            assert refused.value.code == "forbidden"
            assert [m["user"] for m in await ann.get_members("vip-1")] == ["ann", None]
            for client in (anon, ann):
                with pytest.raises(RequestError) as refused:
                    await client.get_members("quiet-1")
                assert refused.value.code == "forbidden"
            assert len(await anon.get_members("lobby")) == 2
            # the backend lists every channel, whatever its rule
            assert [m["user"] for m in server.members("a", "quiet-1")] == ["ann", None]
            for channel in ("vip-1", "quiet-1", "lobby"):  # messages are not presence
                assert (await ann.send(channel, "marker", channel))["recipients"] == 2
            for recorder in heard.values():
                await recorder.marked.wait()
    assert heard["anon"].presence == [
        ("member_join", "lobby", None),
        ("member_update", "lobby", None),
    ]
    assert heard["ann"].presence == [
        ("member_join", "vip-1", "ann"),
        ("member_join", "lobby", "ann"),
        ("member_join", "vip-1", None),
        ("member_join", "lobby", None),
        ("member_update", "vip-1", None),
        ("member_update", "lobby", None),
    ]


class PeakList(list[Any]):
    """An outbox's item list that remembers the most bytes it held after an append."""

    peak = 0
    appends: list[int]

    def append(self, item: Any) -> None:
        super().append(item)
        self.appends.append(len(item))
        self.peak = max(self.peak, sum(map(len, self)))


async def test_a_pipelined_burst_of_members_requests_closes_with_slow_consumer(
    start_server: StartServer,
) -> None:
    budget = 256 * 1024
    server = await start_server(outbound_buffer_bytes=budget, max_message_bytes=1024 * 1024)
    with trio.fail_after(20):
        crowd = []
        for i in range(30):  # 30 members with 2 KB profiles: a page is ~60 KB
            raw = await RawClient.connect(server.addresses[0])
            await raw.hello(profile={"bio": str(i % 10) * 2000})
            await raw.send(t="join", id=1, ch="big")
            await ok_after_presence(raw)
            crowd.append(raw)
        lister = await RawClient.connect(server.addresses[0], rcvbuf=4096)
        welcome = await lister.hello()
        outbox = server.connections[welcome.conn].outbox
        items = outbox.items = PeakList()
        items.appends = []
        burst = [codec.pack({"t": "members", "id": i, "ch": "big"}) for i in range(600)]
        await lister.send_raw(b"".join(lister.ws.send(Message(data=m)) for m in burst))
        assert (await lister.closed()).code == CloseCode.SLOW_CONSUMER  # 37 MB were asked for
        assert server.stats()["slow_consumers"] == 1
        page = max(items.appends)
        assert page > 50_000 and items.peak <= budget + page  # the budget and one reply at most
        await crowd[0].send(t="members", id=2, ch="big", limit=1)  # everyone else is served
        await ok_after_presence(crowd[0])


async def ok_after_presence(raw: RawClient) -> None:
    """Read past presence frames to the reply, which must be ``ok``."""
    frame = await raw.recv()
    while isinstance(frame, f.MemberEvent):
        frame = await raw.recv()
    assert isinstance(frame, f.Ok), frame
