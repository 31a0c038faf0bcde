from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio

from rtcore import Config, Limits, Server
from rtcore.config import AppConfig

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start servers on 127.0.0.1, port 0: ``await start_server(apps=..., **limits)``."""
    servers: list[Server] = []

    async def start(apps: tuple[str, ...] = ("default",), port: int = 0, **limits: Any) -> Server:
        config = Config(host="127.0.0.1", port=port, limits=attrs.evolve(Limits(), **limits),
                        apps=tuple(AppConfig(a) for a in apps), default_app=apps[0])
        server = Server(config)
        await nursery.start(server.serve)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()


def url(server: Server) -> str:
    host, port = server.addresses[0]
    return f"ws://{host}:{port}/"
