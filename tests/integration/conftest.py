from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio

from rtcore import Config, Limits, Server
from rtcore.config import AppConfig
from tests.integration.redisd import RedisProcess, redis_process

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start servers on 127.0.0.1, port 0:
    ``await start_server(apps=("a", AppConfig(...)), config={...Config fields}, **limits)``;
    ``wall=`` replaces the server's wall clock (see :func:`virtual_wall`)."""
    servers: list[Server] = []

    async def start(
        apps: tuple[str | AppConfig, ...] = ("default",),
        port: int = 0,
        config: dict[str, Any] | None = None,
        wall: Callable[[], float] | None = None,
        **limits: Any,
    ) -> Server:
        settings = tuple(AppConfig(a) if isinstance(a, str) else a for a in apps)
        conf = Config(
            host="127.0.0.1",
            port=port,
            limits=attrs.evolve(Limits(), **limits),
            apps=settings,
            default_app=settings[0].name,
            **{"api_port": 0, **(config or {})},  # the server API on a free port
        )
        server = Server(conf) if wall is None else Server(conf, wall=wall)
        await nursery.start(server.serve)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()


VIRTUAL_EPOCH = 1_800_000_000.0


def virtual_wall() -> float:
    """A wall clock that follows trio's (autojump) clock, from a fixed Unix time: token
    ``exp`` and API key expiry then pass in virtual time, like the monotonic timers."""
    return VIRTUAL_EPOCH + trio.current_time()


def url(server: Server) -> str:
    host, port = server.addresses[0]
    return f"ws://{host}:{port}/"


class Checkpoints:
    """Counts ``trio.lowlevel.checkpoint`` calls while active (to see a long loop yield)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._monkeypatch = monkeypatch
        real = trio.lowlevel.checkpoint

        async def checkpoint() -> None:
            self.count += 1
            await real()

        monkeypatch.setattr(trio.lowlevel, "checkpoint", checkpoint)

    def stop(self) -> int:
        """Stop counting (undoing every monkeypatch of the test); returns the count."""
        self._monkeypatch.undo()
        return self.count


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A private redis-server for this test (stop()/start() it to simulate an outage)."""
    with redis_process() as redis:
        yield redis


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url
