"""Run a client test under trio and under asyncio, against servers that always run on trio.

``@both_backends`` turns ``async def test_x(side: TrioSide, ...)`` into a synchronous test
parametrised over ``backend`` ("trio", "asyncio"). pytest-trio's trio_mode only takes async
tests, so it leaves these alone; the rest of the suite keeps running in trio_mode. The test
body runs under its backend (through ``anyio.run``), written against anyio, and ``side`` runs
the trio code it needs — the rtcore server, fake servers — where it can:

- trio: in the same trio run, in a nursery around the test body (as pytest-trio tests do);
- asyncio: in a trio run of its own, in a thread; calls cross with ``trio.from_thread``.

Other pytest fixtures are passed on by name: ``async def test_x(side, tmp_path)``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest
import trio

from rtcore import Config, Limits, Server
from rtcore.config import AppConfig

BACKENDS = ("trio", "asyncio")


class TrioSide:
    """Where trio code runs while a client test runs under either backend."""

    def __init__(self, backend: str, nursery: trio.Nursery) -> None:
        self.backend = backend
        self._nursery = nursery
        self._servers: list[Server] = []

    async def run(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await afn(*args)`` on the trio side; returns its result."""
        raise NotImplementedError

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (synchronous) on the trio side; returns its result."""
        raise NotImplementedError

    async def start(self, serve: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``nursery.start(serve, *args)`` on the trio side; returns what it started with."""
        return await self.run(self._nursery.start, serve, *args)

    async def start_server(
        self,
        apps: tuple[str | AppConfig, ...] = ("default",),
        port: int = 0,
        config: dict[str, Any] | None = None,
        **limits: Any,
    ) -> Server:
        """An rtcore server on 127.0.0.1 (as conftest's ``start_server``), shut down after."""
        settings = tuple(AppConfig(a) if isinstance(a, str) else a for a in apps)
        server = Server(
            Config(
                host="127.0.0.1",
                port=port,
                limits=attrs.evolve(Limits(), **limits),
                apps=settings,
                default_app=settings[0].name,
                **{"api_port": 0, **(config or {})},
            )
        )
        await self.start(server.serve)
        self._servers.append(server)
        return server

    def native_task_group(self) -> AbstractAsyncContextManager[Any]:
        """The backend's own nursery: a trio nursery, or an ``asyncio.TaskGroup``."""
        return trio.open_nursery() if self.backend == "trio" else asyncio.TaskGroup()

    def _stop(self) -> None:
        """On the trio side: shut the servers down and end the nursery."""
        for server in self._servers:
            server.shutdown()
        self._nursery.cancel_scope.cancel()


class SameRun(TrioSide):
    async def run(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await afn(*args)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


class OtherThread(TrioSide):
    def __init__(self, nursery: trio.Nursery, token: trio.lowlevel.TrioToken) -> None:
        super().__init__("asyncio", nursery)
        self.token = token

    async def run(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        cross = functools.partial(trio.from_thread.run, afn, *args, trio_token=self.token)
        return await anyio.to_thread.run_sync(cross, abandon_on_cancel=True)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        cross = functools.partial(trio.from_thread.run_sync, fn, *args, trio_token=self.token)
        return await anyio.to_thread.run_sync(cross, abandon_on_cancel=True)


@contextmanager
def trio_thread() -> Iterator[OtherThread]:
    """A trio run in a thread, for servers while the test body runs under asyncio."""
    handed: queue.Queue[OtherThread] = queue.Queue()
    failure: list[BaseException] = []

    async def host() -> None:
        async with trio.open_nursery() as nursery:
            handed.put(OtherThread(nursery, trio.lowlevel.current_trio_token()))
            await trio.sleep_forever()

    def main() -> None:
        try:
            trio.run(host)
        except BaseException as exc:  # handed to the test's thread below
            failure.append(exc)

    thread = threading.Thread(target=main, name="trio-side", daemon=True)
    thread.start()
    side = handed.get(timeout=10)
    try:
        yield side
    finally:
        if thread.is_alive():
            trio.from_thread.run_sync(side._stop, trio_token=side.token)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the trio side did not stop"
        if failure:
            raise failure[0]


@asynccontextmanager
async def same_run() -> AsyncIterator[SameRun]:
    async with trio.open_nursery() as nursery:
        side = SameRun("trio", nursery)
        try:
            yield side
        finally:
            side._stop()


def run_under(backend: str, test: Callable[..., Awaitable[None]], **fixtures: Any) -> None:
    """Run ``test(side, **fixtures)`` under ``backend`` with a trio side for its servers."""
    if backend == "trio":

        async def main() -> None:
            async with same_run() as side:
                await test(side, **fixtures)

        trio.run(main)
    else:
        with trio_thread() as side:
            anyio.run(functools.partial(test, side, **fixtures), backend="asyncio")


def both_backends(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Make ``async def test_x(side, *fixtures)`` a test run once under each backend."""
    fixture_names = list(inspect.signature(test).parameters)[1:]

    def run_test(backend: str, **fixtures: Any) -> None:
        run_under(backend, test, **fixtures)

    keyword = inspect.Parameter.KEYWORD_ONLY
    run_test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, keyword) for name in ["backend", *fixture_names]]
    )
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(run_test, attribute, getattr(test, attribute))
    return pytest.mark.parametrize("backend", BACKENDS)(run_test)  # type: ignore[no-any-return]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll client state that has no event of its own (bounded by the test's fail_after)."""
    while not predicate():  # noqa: ASYNC110
        await anyio.sleep(0.005)
