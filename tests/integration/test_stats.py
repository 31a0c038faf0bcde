"""The stats endpoint over a large channel table yields to other tasks between slices, and
ranks channels exactly as the in-process stats do."""

from __future__ import annotations

import httpx
import pytest

from rtcore import Server
from rtcore import operations as api
from rtcore.config import AppConfig
from rtcore.core.app import App
from rtcore.core.members import Member
from rtcore.core.outbox import Outbox
from tests.integration.conftest import Checkpoints, StartServer

SECRET = "a-server-secret-of-at-least-32-chars!"


def fill(app: App, sizes: list[int]) -> None:
    """Channels ch-0, ch-1, ... with the given member counts (members without connections)."""
    for i, size in enumerate(sizes):
        for j in range(size):
            member = Member(f"m{i}-{j}", None, None, Outbox())
            app.table.connect(member)
            app.table.join(member, f"ch-{i}")


async def test_ranking_the_channels_yields_every_slice(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcore.server import queries as server_module

    app = server.apps["default"]
    fill(app, [1, 3, 2, 3, 1])
    monkeypatch.setattr(server_module, "STATS_SLICE", 2)
    checkpoints = Checkpoints(monkeypatch)
    best = await server.largest_channels(app, 3)
    assert checkpoints.stop() == 3  # slices of 2, 2 and 1 channels
    assert best == [("ch-1", 3), ("ch-3", 3), ("ch-2", 2)]  # ties in table order
    assert api.stats(app, top=3).result["members"] == dict(best)


async def test_the_stats_endpoint_lists_the_largest_channels(start_server: StartServer) -> None:
    server = await start_server(apps=(AppConfig("chat", server_secret=SECRET),))
    fill(server.apps["chat"], [2] * 150 + [5])
    host, port = server.api_addresses[0]
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        response = await http.get(
            "/v1/apps/chat/stats", headers={"Authorization": f"Bearer {SECRET}"}
        )
    body = response.json()
    assert body["channels"] == 151 and len(body["members"]) == api.STATS_TOP
    assert list(body["members"].items())[:2] == [("ch-150", 5), ("ch-0", 2)]
