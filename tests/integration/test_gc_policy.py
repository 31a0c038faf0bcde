"""The garbage collector's policy (rtcore.server.gc_policy): closed connections leave no
reference cycles (so freezing live ones cannot leak them), what survives a pass is frozen, the
valve collects cycles that died while frozen, and the server runs it only when asked."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from rtcore.protocol import frames as f
from rtcore.server import Server
from rtcore.server.gc_policy import GcFreezer
from tests.integration.conftest import StartServer
from tests.integration.raw import RawClient


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Every test leaves the process's collector as it found it (one process runs them all)."""
    yield
    gc.unfreeze()
    gc.enable()


class Node:
    """An object in a reference cycle with itself."""

    def __init__(self) -> None:
        self.me = self


def server_garbage() -> list[str]:
    """What only the collector would free, of the server's own objects (rtcore's and its
    wsproto connections'; the test's raw clients are wsproto objects of the test module's)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted(
            type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("rtcore.")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def wait_until_gone(server: Server) -> None:
    with trio.fail_after(10):
        while server.connections:  # noqa: ASYNC110 (no event says "all closed": poll, bounded)
            await trio.sleep(0.01)


async def test_closed_connections_leave_no_reference_cycles(server: Server) -> None:
    """Each way out: the client's close handshake, a dropped TCP connection, and a close the
    server decides (a text frame: 1003)."""
    clients = []
    for _ in range(3):
        c = await RawClient.connect(server.addresses[0])
        assert isinstance(await c.hello(), f.Welcome)
        await c.send(t="join", id=1, ch="room")
        while not isinstance(await c.recv(), f.Ok):  # (presence of the others comes first)
            pass
        clients.append(c)
    gc.collect()  # (what earlier tests left)
    gc.disable()  # from here, nothing is freed but by reference counting
    by_handshake, dropped, refused = clients
    await by_handshake.close()
    assert (await by_handshake.closed()).code == 1000
    await dropped.aclose()
    await refused.send_text("not msgpack")
    assert (await refused.closed()).code == 1003
    for c in (by_handshake, refused):
        await c.aclose()
    await wait_until_gone(server)
    assert server_garbage() == []


def test_a_pass_freezes_what_survived_it() -> None:
    freezer = GcFreezer()
    freezer.settle()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [[i] for i in range(1000)]
    freezer.settle()
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_the_valve_collects_cycles_that_died_frozen() -> None:
    freezer = GcFreezer(growth=2.0, floor=0)
    freezer.settle()
    node = Node()
    dead = weakref.ref(node)
    freezer.settle()  # frozen while alive
    del node
    gc.collect()
    assert dead() is not None  # a frozen cycle is not collected: the leak the valve bounds
    ballast: list[Any] = [[] for _ in range(freezer.base + 10)]  # the frozen heap doubles
    freezer.settle()
    assert freezer.valves == 1
    assert dead() is None
    assert len(ballast) > 0


def test_churn_that_frees_what_was_frozen_opens_no_valve() -> None:
    """Connections come and go: what they froze is freed by reference counting, the frozen
    heap does not grow, so no full collection -- the estimate is checked and re-anchored."""
    freezer = GcFreezer(growth=2.0, floor=0)
    freezer.settle()
    for _ in range(4):  # each round freezes, then frees, half as many objects as the heap holds
        churned: list[Any] = [[] for _ in range(freezer.base // 2)]
        freezer.settle()
        del churned
    freezer.settle()
    assert freezer.valves == 0
    assert freezer.estimate < 2 * freezer.base  # re-anchored on the real count


async def test_passes_run_every_second_and_unfreeze_on_the_way_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        freezer = GcFreezer(every=1.0)
        await nursery.start(freezer.run)
        after_start = gc.get_freeze_count()
        assert after_start > 0
        kept = [[i] for i in range(1000)]
        await trio.sleep(1.5)
        assert gc.get_freeze_count() >= after_start + len(kept)
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0


async def test_the_server_freezes_only_when_asked(start_server: StartServer) -> None:
    await start_server()
    assert gc.get_freeze_count() == 0  # embedded: the collector is the application's
    frozen = Server(gc_freeze=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(frozen.serve)
        assert gc.get_freeze_count() > 0
        frozen.shutdown()
    assert gc.get_freeze_count() == 0


def test_rtcore_serve_freezes_unless_told_not_to_and_tells_its_workers() -> None:
    from rtcore.cli import _worker_options, build_parser

    assert build_parser().parse_args(["serve"]).no_gc_freeze is False
    told = build_parser().parse_args(["serve", "--no-gc-freeze", "--workers", "2"])
    assert told.no_gc_freeze is True
    assert "--no-gc-freeze" in _worker_options(told)
    assert "--no-gc-freeze" not in _worker_options(build_parser().parse_args(["serve"]))
