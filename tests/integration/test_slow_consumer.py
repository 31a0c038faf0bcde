"""A stalled subscriber is disconnected with 4008 once its outbound buffer passes the budget,
while everyone else receives every message and the server stays responsive."""

from __future__ import annotations

import trio

from rtcore import CloseCode
from rtcore.client import Msg, open_client
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import Closed, RawClient

BUDGET = 64 * 1024
PAYLOAD = b"x" * 16 * 1024
MESSAGES = 800  # 12.8 MB: more than the kernel's socket buffers can hide


async def test_a_stalled_subscriber_is_closed_as_slow_and_others_get_everything(
    start_server: StartServer,
) -> None:
    server = await start_server(outbound_buffer_bytes=BUDGET, close_timeout=5.0)
    with trio.fail_after(60):
        stalled = await RawClient.connect(server.addresses[0], rcvbuf=4096)
        await stalled.hello()
        await stalled.send(t="join", id=1, ch="feed")
        assert isinstance(await stalled.recv(), f.MemberEvent)
        assert isinstance(await stalled.recv(), f.Ok)
        # From here on the stalled client reads nothing.
        async with open_client(url(server), echo=False) as healthy:
            await healthy.join("feed")
            events = healthy.events(maxsize=10)
            received = 0
            for i in range(MESSAGES):
                server.send("default", "feed", "tick", {"i": i, "pad": PAYLOAD})
                async for event in events:  # lockstep: the healthy one never falls behind
                    if isinstance(event, Msg):
                        assert event.data["i"] == i
                        received += 1
                        break
                if server.flusher.slow_consumers:
                    break
            assert server.flusher.slow_consumers == 1, "the stalled client was never cut off"
            assert received == i + 1
            # The stalled client, reading again, finds the messages it had, then the close.
            got = 0
            try:
                while True:
                    frame = await stalled.recv()
                    if isinstance(frame, f.MemberEvent):  # the healthy member's join
                        continue
                    assert isinstance(frame, f.Msg) and frame.data["i"] == got
                    got += 1
            except Closed as exc:
                assert exc.code == CloseCode.SLOW_CONSUMER
            assert 0 < got < i + 1, (got, i)
            print(f"stalled client cut off after {i + 1} messages, it had received {got}")
            # The rest of the channel is intact: the healthy member is still there, alone.
            members = await healthy.get_members("feed")
            assert [m["id"] for m in members] == [healthy.id]
            assert (await healthy.send("feed", "after", 1, echo=True))["recipients"] == 1
            assert server.flusher.slow_consumers == 1  # counted once, however long it took
