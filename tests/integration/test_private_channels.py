"""Private channels over real sockets with the Python client: a direct message by a
user-limited name, a private room by channel token (its refresh and its expiry, on trio's
autojump clock), and grants narrowed by a session refresh (protocol.md §4.1.1, §4.1.2,
§4.4.2, §5.6)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio
import trio.testing

from rtcore.client import Client, RequestError, open_client
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.auth import SessionSettings
from rtcore.protocol import frames as f
from tests.integration.conftest import VIRTUAL_EPOCH, StartServer, url, virtual_wall
from tests.integration.test_observe import scrape, value

SECRET = "q" * 32
APP = AppConfig(
    "a",
    session=SessionSettings(key=SECRET),
    channels=(
        ChannelRule("dm#*", join="signed_in", send="signed_in", user_limited=True),
        ChannelRule("room:*", join="token", send="token", presence="token"),
        ChannelRule("team:*", join="granted", send="granted", presence="granted"),
    ),
)


def session_token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, "exp": 4_000_000_000, **claims}, SECRET, "HS256")


def room_token(channel: str, user: str, exp: float, **claims: Any) -> str:
    body = {"sub": user, "channel": channel, "exp": exp, **claims}
    return jwt.encode(body, SECRET, "HS256")


class Inbox:
    """Messages and left events a client received, with an event per arrival."""

    def __init__(self, client: Client) -> None:
        self.texts: list[str] = []
        self.left: list[tuple[str, str]] = []
        self.changed = trio.Event()
        client.on("chat", self._msg)
        client.on_left(self._left)

    def _msg(self, msg: f.Msg) -> None:
        self.texts.append(msg.data)
        self.changed.set()

    def _left(self, event: f.Left) -> None:
        self.left.append((event.channel, event.reason))
        self.changed.set()

    async def wait(self, predicate: Any) -> None:
        while not predicate():
            await self.changed.wait()
            self.changed = trio.Event()


async def test_a_direct_message_between_alice_and_bob_refuses_carol(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    dm = "dm#alice,bob"
    with trio.fail_after(10):
        async with (
            open_client(url(server), app="a", token=session_token("alice")) as alice,
            open_client(url(server), app="a", token=session_token("bob")) as bob,
            open_client(url(server), app="a", token=session_token("carol")) as carol,
        ):
            inbox = Inbox(bob)
            assert await alice.join(dm) and await bob.join(dm)
            await alice.send(dm, "chat", "hi bob")
            await inbox.wait(lambda: inbox.texts == ["hi bob"])
            with pytest.raises(RequestError) as refused:
                await carol.join(dm)
            assert refused.value.code == "forbidden"
            assert "only the users its name lists" in refused.value.message
            with pytest.raises(RequestError) as refused:
                await carol.get_members(dm)
            assert refused.value.code == "forbidden"
            assert sorted(m["user"] for m in await alice.get_members(dm)) == ["alice", "bob"]
            assert await carol.join("dm#carol,dave")  # carol's own DMs are hers
            stats = server.apps["a"].statistics.permission_refusals
            assert stats == {("join", "user_limited"): 1, ("presence", "user_limited"): 1}


async def test_a_private_room_token_is_refreshed_before_it_expires(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(apps=(APP,), wall=virtual_wall, heartbeat_interval=10)
    asked: list[str] = []

    async def provider(channel: str) -> str:  # the app's backend, asked by the client
        asked.append(channel)
        return room_token(channel, "ann", virtual_wall() + 60, info={"seat": len(asked)})

    with trio.fail_after(3600):
        async with (
            open_client(
                url(server), app="a", token=session_token("ann"), channel_token=provider
            ) as ann,
            open_client(
                url(server),
                app="a",
                token=session_token("bob"),
                channel_token=lambda ch: room_token(ch, "bob", VIRTUAL_EPOCH + 10**6),
            ) as bob,
        ):
            inbox = Inbox(ann)
            assert await ann.join("room:7") and await bob.join("room:7")
            members = {m["user"]: m for m in await bob.get_members("room:7")}
            assert members["ann"]["info"] == {"seat": 1}
            await trio.sleep(600)  # ten token lifetimes: each refreshed before its exp
            assert len(asked) >= 10 and inbox.left == []
            assert "room:7" in ann.channels
            # the refreshed tokens did not change the member's info: the joining token's
            members = {m["user"]: m for m in await bob.get_members("room:7")}
            assert members["ann"]["info"] == {"seat": 1}
            with pytest.raises(RequestError) as refused:  # bob's token: default ops, no send
                await bob.send("room:7", "chat", "still here?")
            assert refused.value.code == "forbidden"


async def test_a_private_room_token_without_refresh_expires(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(apps=(APP,), wall=virtual_wall, heartbeat_interval=10)
    with trio.fail_after(3600):
        issuing = [True]

        def provider(channel: str) -> str | None:  # sync providers work too
            if not channel.startswith("room:") or not issuing[0]:
                return None
            return room_token(channel, "ann", virtual_wall() + 60)

        async with open_client(
            url(server), app="a", token=session_token("ann"), channel_token=provider
        ) as ann:
            inbox = Inbox(ann)
            await ann.join("lobby")
            assert await ann.join("room:8")
            issuing[0] = False  # the backend stops issuing tokens: no refresh
            await inbox.wait(lambda: inbox.left != [])
            assert inbox.left == [("room:8", "token_expired")]
            assert virtual_wall() > VIRTUAL_EPOCH + 60 + 30  # not before exp + leeway
            assert list(ann.channels) == ["lobby"]
            assert server.apps["a"].statistics.channel_removals == {"token_expired": 1}


async def test_refused_channel_tokens_leave_the_connection_open(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    tokens = {
        "room:1": room_token("room:2", "ann", 4_000_000_000),  # another channel
        "room:3": room_token("room:3", "bob", 4_000_000_000),  # another user
        "room:4": room_token("room:4", "ann", 1_000_000_000),  # expired
        "room:5": jwt.encode(
            {"sub": "ann", "channel": "room:5", "exp": 4_000_000_000}, "x" * 32, "HS256"
        ),  # forged
    }
    with trio.fail_after(10):
        async with open_client(
            url(server), app="a", token=session_token("ann"), channel_token=tokens.get
        ) as ann:
            for channel in tokens:
                with pytest.raises(RequestError) as refused:
                    await ann.join(channel)
                assert refused.value.code == "invalid_channel_token"
            with pytest.raises(RequestError) as refused:
                await ann.join("room:6")  # the provider has none: no token
            assert refused.value.code == "forbidden"
            assert await ann.join("lobby")  # the connection goes on


async def test_grants_narrowed_by_refresh_remove_the_connection(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    grants = {"team:red": ["join", "send", "presence"], "team:blue": ["join"]}
    with trio.fail_after(10):
        async with (
            open_client(url(server), app="a", token=session_token("ann", channels=grants)) as ann,
            open_client(
                url(server), app="a", token=session_token("bob", channels={"team:*": ["join"]})
            ) as bob,
        ):
            inbox = Inbox(ann)
            assert await ann.join("team:red") and await ann.join("team:blue")
            assert await bob.join("team:red")
            with pytest.raises(RequestError) as refused:
                await bob.send("team:red", "chat", "x")
            assert refused.value.code == "forbidden"
            await ann.refresh(session_token("ann", channels={"team:blue": ["join"]}))
            await inbox.wait(lambda: inbox.left != [])
            assert inbox.left == [("team:red", "grant_revoked")]
            assert list(ann.channels) == ["team:blue"]
            assert [m["user"] for m in server.members("a", "team:red")] == ["bob"]
            with pytest.raises(RequestError) as refused:
                await ann.join("team:red")
            assert refused.value.code == "forbidden"


async def test_refusals_and_removals_are_metrics_by_operation_and_reason(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(APP,))
    grants = {"team:red": ["join"]}
    with trio.fail_after(10):
        async with open_client(
            url(server), app="a", token=session_token("ann", channels=grants)
        ) as ann:
            for channel in ("dm#bob,carol", "team:blue", "room:1"):
                with pytest.raises(RequestError):
                    await ann.join(channel)
            assert await ann.join("team:red")
            with pytest.raises(RequestError):
                await ann.send("team:red", "chat", "x")
            inbox = Inbox(ann)
            await ann.refresh(session_token("ann"))
            await inbox.wait(lambda: inbox.left != [])
            samples = await scrape(server)
    refusals = "rtcore_permission_refusals_total"
    assert value(samples, refusals, app="a", op="join", reason="user_limited") == 1
    assert value(samples, refusals, app="a", op="join", reason="not_granted") == 1
    assert value(samples, refusals, app="a", op="join", reason="no_token") == 1
    assert value(samples, refusals, app="a", op="send", reason="not_granted") == 1
    assert value(samples, "rtcore_refusals_total", app="a", code="forbidden") == 4
    removals = "rtcore_channel_removals_total"
    assert value(samples, removals, app="a", reason="grant_revoked") == 1
