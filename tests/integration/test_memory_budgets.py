"""Memory under the history and profile attacks of issue 20 stays within the configured
budgets plus a stated overhead, as the server accounts for it (not RSS): history by
``max_history_bytes`` (what it holds is what it counts: tests/unit/test_history_budget.py
checks that against tracemalloc), profiles by what a profile may contain."""

from __future__ import annotations

import sys
from typing import Any

import trio

from bench.scenarios.bystander import costliest_data
from rtcore.config import AppConfig, ChannelRule
from rtcore.core.history import ENTRY_OVERHEAD, STREAM_OVERHEAD, MemoryHistory
from rtcore.protocol import CloseCode
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient

BUDGET = 1024 * 1024
FEED = AppConfig("default", channels=(ChannelRule("feed*", history_size=1000, history_ttl=600.0),))
PROFILE_OVERHEAD = 8
"""A decoded profile holds at most this many times ``max_profile_bytes``."""


def deep_size(value: Any) -> int:
    """Bytes of ``value`` and everything it holds (no object counted twice)."""
    seen: set[int] = set()
    stack, total = [value], 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def costliest_profile() -> dict[str, Any]:
    """A profile at the limits of protocol.md §4.3.1: a map (1) of 256 entries, 31 of them
    empty arrays (32 arrays and maps in all), the others integers."""
    return {f"k{i}": [] if i < 31 else 1000 + i for i in range(256)}


async def reply(client: RawClient) -> Any:
    """The next reply (presence frames before it skipped)."""
    for _ in range(100):
        frame = await client.recv()
        if isinstance(frame, f.Ok | f.Err):
            return frame
    raise AssertionError("no reply")


async def test_history_and_profile_attacks_stay_within_their_budgets(
    start_server: StartServer,
) -> None:
    server = await start_server(apps=(FEED,), max_history_bytes=BUDGET)
    store = server.apps["default"].broker.history
    assert isinstance(store, MemoryHistory)
    data = costliest_data()
    with trio.fail_after(60):
        sender = await RawClient.connect(server.addresses[0])
        await sender.hello()
        await sender.send(t="join", id=1, ch="feed")
        assert isinstance(await reply(sender), f.Ok)
        for i in range(40):  # ~2.5 MB of the costliest accepted messages into 1 MiB
            await sender.send(t="send", id=10 + i, ch="feed", ev="e", data=data, echo=False)
            assert isinstance(await reply(sender), f.Ok)
        for i in range(2000):  # reads of never-used history channels
            await sender.send(t="history", id=100 + i, ch=f"feed-{i}")
            answer = await reply(sender)
            assert isinstance(answer, f.Ok) and answer.data["offset"] == 0, answer
        profiles = []
        for _ in range(10):
            member = await RawClient.connect(server.addresses[0])
            assert isinstance(await member.hello(profile=costliest_profile()), f.Welcome)
            profiles.append(member)
        refused = await RawClient.connect(server.addresses[0])
        await refused.send(t="hello", v=1, profile=[[] for _ in range(4000)])
        assert (await refused.closed()).code == CloseCode.HELLO_EXPECTED
    assert store.bytes <= BUDGET and len(store) == 1  # only the channel published to
    (key,) = store._streams
    stream = store._streams[key]
    held = sum(len(e.data) + ENTRY_OVERHEAD for e in stream.entries)
    assert store.bytes == held + STREAM_OVERHEAD + len(key[0]) + len(key[1])
    assert all(type(e.data) is bytes for e in stream.entries)  # no decoded value is held
    limit = server.config.limits.max_profile_bytes
    members = server.apps["default"].table.everyone
    sizes = [deep_size(m.profile) for m in members.values() if m.profile is not None]
    assert len(sizes) == 10
    assert max(sizes) <= PROFILE_OVERHEAD * limit, max(sizes)
