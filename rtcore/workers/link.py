"""A worker's end of its socket pair with the supervisor (trio).

The supervisor passes one end of a Unix socket pair to each worker (``--supervisor-fd``).
Over it the worker sends lines (:data:`READY`, :data:`RELOAD`); the supervisor sends nothing,
so end-of-file means the supervisor is gone (even SIGKILLed): the worker then shuts down
rather than serve on unsupervised.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

import trio

log = logging.getLogger("rtcore.workers")

READY = b"ready"
"""``ready <node>``: the worker listens on its ports and serves."""
RELOAD = b"reload"
"""The settings page saved the config file: the other workers should reload it too."""
MAX_LINE = 256
"""The longest line either side accepts."""


class SupervisorLink:
    """A worker's connection to its supervisor, from the inherited descriptor ``fd``."""

    def __init__(self, fd: int) -> None:
        self._sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))

    async def ready(self, node: str) -> None:
        """Tell the supervisor this worker serves (as node ``node``)."""
        await self._send(READY + b" " + node.encode("ascii") + b"\n")

    def request_reload(self) -> None:
        """Ask the supervisor to have the other workers reload the config file (never blocks:
        a line this short fits the socket's buffer unless the supervisor is stuck, and then
        the request is logged and dropped)."""
        try:
            os.write(self._sock.fileno(), RELOAD + b"\n")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                raise
            log.warning("cannot ask the supervisor to reload the other workers: %s", exc.strerror)

    async def supervisor_gone(self) -> None:
        """Return once the supervisor's end closes (it exited, or was killed)."""
        try:
            while await self._sock.recv(MAX_LINE):
                pass  # the supervisor sends nothing today; ignore what a newer one might
        except OSError:
            pass  # reset: gone as well

    async def _send(self, line: bytes) -> None:
        try:
            await self._sock.send(line)
        except OSError as exc:  # the supervisor is gone: supervisor_gone() sees it too
            log.warning("cannot tell the supervisor: %s", exc.strerror)
