"""The worker supervisor (rtcore.workers.supervisor) with stand-in workers
(tests/integration/fake_worker.py): the cases a real rtcore worker makes hard to arrange --
a worker that ignores the stop signal, a SIGHUP while a worker is still starting.

Stops and reloads are asked through the supervisor's methods, which its signal handler calls
(signalling the test process itself is left to the end-to-end tests, test_workers.py).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from rtcore.workers.policy import RestartPolicy
from rtcore.workers.supervisor import Command, Supervisor

FAKE = Path(__file__).with_name("fake_worker.py")


def fake(events: Path, *flags: str) -> Command:
    def command(index: int, fd: int) -> list[str]:
        return [sys.executable, str(FAKE), str(fd), str(events), *flags]

    return command


def lines(events: Path) -> list[tuple[int, str]]:
    """(pid, event) of every line so far."""
    if not events.exists():
        return []
    split = (line.partition(" ") for line in events.read_text().splitlines())
    return [(int(pid), event) for pid, _, event in split]


class Running:
    """A supervisor run in the background of a test."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.status: int | None = None

    async def run(self) -> None:
        self.status = await self.supervisor.run()


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` (files written by other processes); the caller bounds the time."""
    while True:
        if check():
            return
        await trio.sleep(0.02)


async def test_a_worker_that_ignores_the_stop_is_killed_at_the_bound(tmp_path: Path) -> None:
    events = tmp_path / "events"
    running = Running(Supervisor(1, fake(events, "--ignore-term"), stop_bound=lambda: 1.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running.run)
            await until(lambda: any(e == "ready" for _, e in lines(events)))
            running.supervisor.stop(0)
    assert running.status == 1  # a straggler had to be killed
    assert [e for _, e in lines(events)] == ["start", "ready", "term-ignored"]
    assert running.supervisor.workers[1].process.returncode == -signal.SIGKILL


async def test_the_stop_signal_is_passed_on_as_it_came(tmp_path: Path) -> None:
    events = tmp_path / "events"
    running = Running(Supervisor(2, fake(events), stop_bound=lambda: 30.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running.run)
            await until(lambda: sum(e == "ready" for _, e in lines(events)) == 2)
            running.supervisor.stop(0, signal.SIGINT)
    assert running.status == 0
    assert sorted(e for _, e in lines(events) if e.startswith("stop")) == ["stop 2", "stop 2"]


async def test_a_reload_while_a_worker_starts_reaches_it_once_it_serves(tmp_path: Path) -> None:
    events = tmp_path / "events"
    running = Running(Supervisor(1, fake(events, "--ready-after", "1"), stop_bound=lambda: 30.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running.run)
            await until(lambda: bool(lines(events)))  # started, not ready: no handlers yet
            running.supervisor.reload()
            await until(lambda: any(e == "hup" for _, e in lines(events)))
            running.supervisor.stop(0)
    assert running.status == 0
    assert [e for _, e in lines(events)] == ["start", "ready", "hup", "stop 15"]


async def test_crashing_workers_are_restarted_until_the_policy_gives_up(tmp_path: Path) -> None:
    events = tmp_path / "events"
    policy = RestartPolicy(max_restarts=2, window=60.0, first_delay=0.01)
    command = fake(events, "--exit-after", "0.05")
    running = Running(Supervisor(1, command, stop_bound=lambda: 30.0, policy=policy))
    with trio.fail_after(60):
        await running.run()  # returns by itself: the third crash gives up
    assert running.status == 1
    starts = [pid for pid, e in lines(events) if e == "start"]
    assert len(starts) == 3 and len(set(starts)) == 3  # the first run and two restarts
    assert [e for _, e in lines(events)].count("exit 3") == 3
