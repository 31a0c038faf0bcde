"""protocol.md §3.5's cadence, on trio's autojump clock: the server checks every quarter
interval and spreads a check's pings over the next quarter, so a silent client is pinged after
1 to 1.5 intervals and closed after 2 to 2.25."""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing
from wsproto.events import CloseConnection, Ping

from rtcore.protocol import CloseCode
from rtcore.protocol import frames as f
from rtcore.server import heartbeat
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient

INTERVAL = 10.0


async def test_a_silent_client_is_pinged_then_closed_within_the_documented_windows(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(heartbeat_interval=INTERVAL)
    with trio.fail_after(10 * INTERVAL):
        await trio.sleep(0.3 * INTERVAL)  # out of phase with the server's checks
        c = await RawClient.connect(server.addresses[0], answer_pings=False)
        assert isinstance(await c.hello(), f.Welcome)
        silent_since = trio.current_time()
        pinged_at = closed_at = None
        close_code = None
        while closed_at is None:
            event = await c._next_event()
            if isinstance(event, Ping) and pinged_at is None:
                pinged_at = trio.current_time() - silent_since
            elif isinstance(event, CloseConnection):
                closed_at, close_code = trio.current_time() - silent_since, event.code
        await c.aclose()
    assert pinged_at is not None
    assert INTERVAL <= pinged_at <= 1.5 * INTERVAL
    assert 2 * INTERVAL <= closed_at <= 2.25 * INTERVAL
    assert close_code == CloseCode.HEARTBEAT_TIMEOUT


async def test_connections_that_fell_silent_together_are_pinged_spread_out(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    """Pinged in one go, their pongs would all come back at once and hold up the deliveries
    behind them: one check's pings go out in slices over the quarter interval after it."""
    n = 40
    server = await start_server(heartbeat_interval=INTERVAL)
    with trio.fail_after(10 * INTERVAL):
        address = server.addresses[0]
        clients = [await RawClient.connect(address, answer_pings=False) for _ in range(n)]
        for c in clients:
            assert isinstance(await c.hello(), f.Welcome)
        silent_since = trio.current_time()  # (the autojump clock: all at the same instant)
        pinged_at: list[float] = []

        async def first_ping(c: RawClient) -> None:
            while not isinstance(await c._next_event(), Ping):
                pass
            pinged_at.append(trio.current_time() - silent_since)

        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(first_ping, c)
        for c in clients:
            await c.aclose()
    assert len(pinged_at) == n
    assert all(INTERVAL <= t <= 1.5 * INTERVAL for t in pinged_at)
    # spread over the quarter interval after the check: with fewer connections than slices
    # (a quarter interval / PING_TICK), one per slice
    assert n < 0.25 * INTERVAL / heartbeat.PING_TICK
    assert max(Counter(round(t, 6) for t in pinged_at).values()) == 1
    assert max(pinged_at) - min(pinged_at) >= (n - 1) * heartbeat.PING_TICK - 1e-6
