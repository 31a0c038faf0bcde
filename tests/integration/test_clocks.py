"""Expiry on trio's autojump clock: the server's timers and local expiry follow trio's clock
(monotonic), so these tests take virtual seconds, not real ones."""

from __future__ import annotations

import jwt
import trio
import trio.testing

from rtcore import CloseCode
from rtcore.config import AppConfig
from rtcore.core.auth import SessionSettings
from rtcore.core.limits.limiter import Rule
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient

SECRET = "k" * 32


async def test_a_rate_limit_refills_on_the_monotonic_clock(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    # the server keeps its real wall clock: only trio's clock moves, so a limiter fed wall
    # time would never refill here
    app = AppConfig("a", rate_limits=(Rule("r", 1, 600),))
    server = await start_server(apps=(app,), heartbeat_interval=3600)  # no pings meanwhile
    with trio.fail_after(2000):
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()
        await raw.send(t="members", id=1, ch="x")
        assert isinstance(await raw.recv(), f.Ok)
        await raw.send(t="members", id=2, ch="x")
        refused = await raw.recv()
        assert isinstance(refused, f.Err) and refused.code == ErrorCode.RATE_LIMITED.value
        assert refused.retry_after is not None and 599_000 < refused.retry_after <= 600_000
        await trio.sleep(300)
        await raw.send(t="members", id=3, ch="x")
        assert (await raw.recv()).code == ErrorCode.RATE_LIMITED.value  # half refilled
        await trio.sleep(300)
        await raw.send(t="members", id=4, ch="x")
        assert isinstance(await raw.recv(), f.Ok)


async def test_an_ended_session_is_refused_for_the_revocation_ttl_then_forgotten(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    app = AppConfig("a", session=SessionSettings(key=SECRET), revocation_ttl=3600)
    server = await start_server(apps=(app,))
    token = jwt.encode({"sub": "ann", "sid": "s1", "exp": 4_000_000_000}, SECRET, "HS256")
    with trio.fail_after(2 * 3600):
        raw = await RawClient.connect(server.addresses[0])
        assert isinstance(await raw.hello(token=token), f.Welcome)
        server.publish_user_event("a", "ann", "signout", session={"id": "s1"})
        assert (await raw.closed()).code == CloseCode.SESSION_ENDED
        await trio.sleep(3599)
        again = await RawClient.connect(server.addresses[0])
        await again.send(t="hello", v=1, token=token)
        assert (await again.closed()).code == CloseCode.SESSION_ENDED
        await trio.sleep(2)
        later = await RawClient.connect(server.addresses[0])
        assert isinstance(await later.hello(token=token), f.Welcome)
