"""protocol.md §3.5's cadence, on trio's autojump clock: the server checks every half interval,
so a silent client is pinged after 1 to 1.5 intervals and closed after 2 to 2.5."""

from __future__ import annotations

import trio
import trio.testing
from wsproto.events import CloseConnection, Ping

from rtcore.protocol import CloseCode
from rtcore.protocol import frames as f
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
    assert 2 * INTERVAL <= closed_at <= 2.5 * INTERVAL
    assert close_code == CloseCode.HEARTBEAT_TIMEOUT
