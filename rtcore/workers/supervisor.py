"""The supervisor of ``rtcore serve --workers N`` (trio): the parent process, serving nothing.

It starts N workers -- each a fresh ``python -m rtcore.cli serve`` with the same settings,
listening with SO_REUSEPORT on the shared ports (rtcore.server.listen) -- and then:

- restarts a worker that exits unasked, as :class:`~rtcore.workers.policy.RestartPolicy`
  says, or gives up and stops them all (exit status 1);
- on SIGTERM or SIGINT passes the signal on (every worker closes its clients with 1001 and
  exits), waits at most ``stop_bound()`` seconds, then SIGKILLs the stragglers;
- on SIGHUP passes it on to every worker (each reloads its ``--config``); a worker that is
  still starting gets it once it serves. A worker whose settings page saved the file asks,
  over its link, for the others to reload too.

Why fresh interpreters (``subprocess``) rather than ``multiprocessing``: a worker is then
exactly the single-process ``rtcore serve`` -- the same argument parsing, config loading,
logging and signal handling -- with nothing pickled across (the config holds secrets), no
fork of a process that runs trio, and an exit status the supervisor reads like any other
process's. Each worker runs in a process group of its own, so a Ctrl-C at a terminal reaches
the supervisor alone, which passes it on once.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from rtcore.workers import link
from rtcore.workers.policy import GiveUp, RestartPolicy, exit_description

log = logging.getLogger("rtcore.workers")

Command = Callable[[int, int], list[str]]
"""The command line of worker ``index`` whose link is descriptor ``fd``: (index, fd) → argv."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@attrs.define(eq=False)
class Worker:
    """One running worker process (a restart makes a new one)."""

    index: int
    process: trio.Process
    link: trio.socket.SocketType
    serving: bool = False
    node: str = ""
    reload_missed: bool = False
    """A SIGHUP came while the worker was starting: it gets one when it serves."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` if the process still runs."""
        if self.process.returncode is None:
            self.process.send_signal(signum)


class Supervisor:
    """Runs ``count`` workers until a stop signal, or until it gives up.

    Args:
        count: how many workers.
        command: each worker's command line.
        stop_bound: seconds a stopping worker gets before it is killed (asked at stop time,
            so that it follows a reloaded ``shutdown_grace``).
        policy: when to restart; the defaults of rtcore.workers.policy.
    """

    def __init__(
        self,
        count: int,
        command: Command,
        stop_bound: Callable[[], float],
        policy: RestartPolicy | None = None,
    ) -> None:
        self.count = count
        self._command = command
        self._stop_bound = stop_bound
        self._policy = policy or RestartPolicy()
        self.workers: dict[int, Worker] = {}
        """The latest process of each worker, by index (1..count)."""
        self.status = 0
        """The exit status :meth:`run` returns: 1 after giving up or killing a straggler."""
        self._stopping = trio.Event()
        self._stop_signal: int = signal.SIGTERM
        self._stop_deadline = 0.0
        self._all_served = False

    async def run(self) -> int:
        """Start the workers and supervise them until they have all stopped."""
        with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._on_signals, signals)
                async with trio.open_nursery() as workers:  # each ends after the stop
                    for index in range(1, self.count + 1):
                        workers.start_soon(self._keep_running, index)
                nursery.cancel_scope.cancel()
        log.info("all workers stopped (exit status %d)", self.status)
        return self.status

    def stop(self, status: int, signum: int = signal.SIGTERM) -> None:
        """Stop every worker with ``signum`` and make :meth:`run` return (at least) ``status``.

        Each worker gets until ``stop_bound()`` seconds from now to exit; then it is killed.
        """
        self.status = max(self.status, status)
        if self._stopping.is_set():
            return
        self._stop_signal = signum
        self._stop_deadline = trio.current_time() + self._stop_bound()
        self._stopping.set()

    def reload(self) -> None:
        """Have every worker reload its configuration (SIGHUP); a worker still starting
        gets it once it serves."""
        self._hup(skip=None)

    # -- signals ----------------------------------------------------------------------------

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                log.info("%s: already stopping", name)
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: every worker reloads its configuration")
                self.reload()
            else:
                log.info("%s: stopping %d workers", name, self.count)
                self.stop(0, signum)

    def _hup(self, skip: Worker | None) -> None:
        for worker in self.workers.values():
            if worker is skip:
                continue
            if worker.serving:
                worker.signal(signal.SIGHUP)
            else:  # before its signal handlers are set, SIGHUP would kill it
                worker.reload_missed = True

    # -- one worker -------------------------------------------------------------------------

    async def _keep_running(self, index: int) -> None:
        """Run worker ``index``, restarting it as the policy says, until the stop."""
        while not self._stopping.is_set():
            try:
                worker = await self._start(index)
            except OSError as exc:
                log.error("cannot start worker %d: %s: stopping all workers", index, exc)
                self.stop(1)
                return
            returncode = await self._watch(worker)
            how = exit_description(returncode)
            if self._stopping.is_set():
                self._stopped(worker, returncode, how)
                return
            decision = self._policy.after_crash(trio.current_time(), served=worker.serving)
            if isinstance(decision, GiveUp):
                log.error(
                    "worker %d (pid %d) exited unasked (%s); %s: stopping all workers",
                    index,
                    worker.pid,
                    how,
                    decision.reason,
                )
                self.stop(1)
                return
            log.warning(
                "worker %d (pid %d) exited unasked (%s): restarting it in %g s",
                index,
                worker.pid,
                how,
                decision.delay,
            )
            with trio.move_on_after(decision.delay):
                await self._stopping.wait()

    async def _start(self, index: int) -> Worker:
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                self._command(index, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                process_group=0,  # signals reach it through the supervisor only
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = Worker(index, process, trio.socket.from_stdlib_socket(ours))
        self.workers[index] = worker
        log.info("worker %d started (pid %d)", index, worker.pid)
        return worker

    async def _watch(self, worker: Worker) -> int:
        """Follow the worker's link until its process exits; returns its exit status."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_link, worker)
                nursery.start_soon(self._stop_when_asked, worker)
                returncode = await worker.process.wait()
                nursery.cancel_scope.cancel()
        finally:
            worker.link.close()
        return returncode

    async def _read_link(self, worker: Worker) -> None:
        buffer = b""
        while data := await _receive(worker.link):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._told(worker, line)
            if len(buffer) > link.MAX_LINE:
                log.warning(
                    "worker %d (pid %d): overlong line on its link", worker.index, worker.pid
                )
                return

    def _told(self, worker: Worker, line: bytes) -> None:
        word, _, rest = line.partition(b" ")
        if word == link.READY:
            worker.serving = True
            worker.node = rest.decode("ascii", "replace")
            log.info("worker %d (pid %d, node %s) serving", worker.index, worker.pid, worker.node)
            if worker.reload_missed:
                worker.reload_missed = False
                worker.signal(signal.SIGHUP)
            if not self._all_served and len(self.workers) == self.count:
                if all(w.serving for w in self.workers.values()):
                    self._all_served = True
                    log.info("all %d workers serving", self.count)
        elif word == link.RELOAD and not self._stopping.is_set():
            log.info("worker %d saved the settings: the other workers reload them", worker.index)
            self._hup(skip=worker)
        else:
            log.warning("worker %d (pid %d) said %r on its link", worker.index, worker.pid, line)

    def _stopped(self, worker: Worker, returncode: int, how: str) -> None:
        expected = (0, -self._stop_signal)  # a worker still starting dies of the signal
        if returncode in expected:
            log.info("worker %d (pid %d) stopped (%s)", worker.index, worker.pid, how)
        else:
            log.warning("worker %d (pid %d) stopped badly (%s)", worker.index, worker.pid, how)
            self.status = max(self.status, 1)

    # -- stopping ---------------------------------------------------------------------------

    async def _stop_when_asked(self, worker: Worker) -> None:
        """After :meth:`stop`: pass the signal on and, at the stop deadline, kill the worker
        (cancelled as soon as it exits)."""
        await self._stopping.wait()
        worker.signal(self._stop_signal)
        await trio.sleep_until(self._stop_deadline)
        log.error("worker %d (pid %d) did not stop in time: killing it", worker.index, worker.pid)
        self.status = max(self.status, 1)
        worker.process.kill()


async def _receive(sock: trio.socket.SocketType) -> bytes:
    """The next bytes from a worker's link; b"" at its end (or when it broke)."""
    try:
        return await sock.recv(link.MAX_LINE)
    except OSError:
        return b""
