"""One client connection's socket, bytes in and bytes out (trio); the WebSocket on top of it is
rtcore.server.connection's.

Reading: what trio's ``sock.recv`` does, inline (an idle connection waits with fewer
coroutines). Writing: ``outbox.items`` is the queue, already framed; the server's flusher
writes it with one non-blocking :meth:`Transport.write_now` per pass, and while the socket is
full a drain task (:meth:`Transport._drain`) owns it. ``outbox.items[0]`` may be the unwritten
tail of a partly written frame, so the queue stays a valid byte stream if any writer is
cancelled.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import trio

from rtcore.core.outbox import Outbox
from rtcore.protocol import CloseCode

log = logging.getLogger("rtcore.connection")

RECEIVE_SIZE = 64 * 1024


class Transport:
    """A client socket and its outbox; the base of rtcore.server.connection.Connection, which
    decides when to close (:meth:`request_close`).

    Slotted: idle connections are what a server has most of.
    """

    __slots__ = (
        "sock",
        "tls",
        "id",
        "fd",
        "outbox",
        "last_seen",
        "pinged",
        "blocked",
        "queued",
        "counted",
    )

    tls: trio.SSLStream[Any] | None
    """With TLS, all I/O goes through the SSLStream and its drain task (no fd writes)."""
    outbox: Outbox
    """The session's outbox (set by the connection)."""
    blocked: bool
    """A drain task owns the socket until the outbox is empty."""
    queued: int
    """Bytes in the outbox counted so far (kept while blocked; the flusher's budget check)."""
    counted: int
    """How many outbox items ``queued`` covers."""

    def __init__(
        self, sock: trio.socket.SocketType, conn_id: str, tls: trio.SSLStream[Any] | None
    ) -> None:
        # The bare trio socket, not a SocketStream: the flusher writes to the file descriptor,
        # and the stream wrapper would only cost memory on every idle connection.
        self.sock = sock
        self.tls = tls
        self.id = conn_id
        self.fd = sock.fileno() if tls is None else -1
        self.last_seen = trio.current_time()
        self.pinged = self.blocked = False
        self.queued = self.counted = 0

    def request_close(self, code: int, reason: str, *, discard_pending: bool = False) -> None:
        """Ask the connection to close: the peer is gone (Connection decides how)."""
        raise NotImplementedError

    # -- reading ------------------------------------------------------------------------------

    async def _receive(self) -> bytes:
        """The next bytes from the peer; b"" when it is gone."""
        if self.tls is not None:
            try:
                data = bytes(await self.tls.receive_some(RECEIVE_SIZE))  # (may be a bytearray)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            self._heard()
            return data
        # What trio's sock.recv does, inline, so that an idle connection waits with three
        # coroutines fewer (recv's wrapper, its non-blocking helper, and ours): read; if
        # nothing was there, wait until readable (a checkpoint) and read again; if data was
        # there at once, still yield, so a fast sender cannot starve the others.
        # (Connection._read does the same inline: one coroutine fewer again.)
        got = self._take()
        if got is not None:
            await trio.lowlevel.checkpoint()
        while got is None:
            got = await self._readable()
        return got

    async def _readable(self) -> bytes | None:
        """Wait until the socket is readable, then :meth:`_take`; b"" if it was closed."""
        try:
            await trio.lowlevel.wait_readable(self.sock)
        except (OSError, trio.ClosedResourceError):
            return b""
        return self._take()

    def _take(self) -> bytes | None:
        """Read what the socket holds (plain sockets): the bytes, b"" if the peer is gone,
        None if nothing is there yet (returned, not raised, so that no exception is kept alive
        while the connection then waits)."""
        try:
            data = os.read(self.fd, RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        if data:
            self._heard()
        return data

    def _heard(self) -> None:
        self.last_seen = trio.current_time()
        self.pinged = False

    # -- writing ------------------------------------------------------------------------------

    def write_now(self, data: bytes | memoryview) -> int:
        """One non-blocking write; returns bytes written, -1 if the peer is gone.

        A TLS connection cannot write without awaiting: 0, so its drain task does it.
        """
        if self.tls is not None:
            return 0
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN):
                log.warning("connection %s: write failed: %s", self.id, exc)
            return -1

    async def _write_through(self, data: bytes = b"") -> None:
        """Queue ``data`` and write the whole outbox now, with no other writer running."""
        if data:
            self.outbox.items.append(data)
        self.blocked = True
        try:
            await self._drain()
        finally:
            self.blocked = False

    async def _drain(self) -> None:
        outbox = self.outbox
        while outbox.items and not outbox.closed:
            items = outbox.items
            k = len(items)
            data = items[0] if k == 1 else b"".join(items)
            if self.tls is not None:
                await self._send_tls(items, k, data)
                continue
            n = self.write_now(data)
            if n < 0:
                outbox.closed = True
                self.request_close(CloseCode.NORMAL, "peer is gone")
                return
            if n == len(data):
                del items[:k]
                self.counted, self.queued = 0, 0
            else:
                rest = memoryview(data)[n:]
                items[:k] = [rest]
                self.counted, self.queued = 1, len(rest)
                await trio.lowlevel.wait_writable(self.fd)

    async def _send_tls(
        self, items: list[bytes | memoryview], k: int, data: bytes | memoryview
    ) -> None:
        del items[:k]
        self.counted, self.queued = 0, 0
        try:
            await self.tls.send_all(data)  # type: ignore[union-attr]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outbox.closed = True
            self.request_close(CloseCode.NORMAL, "peer is gone")
