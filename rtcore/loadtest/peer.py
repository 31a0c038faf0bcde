"""One load-test connection: a non-blocking socket through TCP connect, the upgrade, hello
and joins, then frames in (counted) and requests out. Everything it sees is reported to its
``Tally`` (the load process's counts); it never raises for what the server does: a refusal,
a close or a reset is a count.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Protocol

import msgpack

from rtcore.loadtest import wire
from rtcore.loadtest.plan import CHURN_MARK, EVENT, Conn, Target

RECV = 256 * 1024

CONNECTING, UPGRADING, JOINING, READY, CLOSED = (
    "connecting",
    "upgrading",
    "joining",
    "ready",
    "closed",
)


class Tally(Protocol):
    """What a connection reports to (the load process's counts, ``agent.Agent``)."""

    def ready(self, peer: Peer) -> None: ...
    def lost(self, peer: Peer, why: str, was_ready: bool) -> None: ...
    def delivered(self, peer: Peer, data: Any) -> None: ...
    def presence(self, peer: Peer, count: int) -> None: ...
    def acked(self, peer: Peer, request: int) -> None: ...
    def refused_request(self, peer: Peer, request: int, code: str) -> None: ...


class Peer:
    """One connection of the plan (``conn``); ``attempt`` counts connects since it was last
    ready (for the backoff)."""

    def __init__(self, conn: Conn, target: Target, hello: bytes) -> None:
        self.conn = conn
        self.target = target
        self.hello = hello
        self.sock: socket.socket | None = None
        self.state = CLOSED
        self.inbuf = b""
        self.joins_left = 0
        self.next_id = 100
        self.attempt = 0
        self.retry_at = 0.0
        self.connect_failed = False
        self.in_channel = False
        """churner: whether it is in its channel now (after a join's ok, until a leave)."""

    def start(self) -> socket.socket:
        """Open the TCP connection (non-blocking); the caller registers the socket."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.target.host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((self.target.host, self.target.port))
        self.connect_failed = err not in (0, errno.EINPROGRESS)
        self.sock, self.state, self.inbuf = sock, CONNECTING, b""
        self.attempt += 1
        return sock

    def connected(self, tally: Tally) -> None:
        """The socket became writable: the TCP connect finished (or failed)."""
        assert self.sock is not None
        if self.connect_failed or self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.fail(tally, "tcp")
            return
        self.state = UPGRADING
        self.send(wire.upgrade_request(self.target.host_header, self.target.path))

    def send(self, data: bytes) -> None:
        """Write ``data`` whole (load-test writes are small; a full socket waits briefly)."""
        assert self.sock is not None
        self.sock.setblocking(True)
        self.sock.settimeout(10.0)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def request(self, **fields: Any) -> int:
        """Send a request; returns its id."""
        self.next_id += 1
        self.send(wire.request(id=self.next_id, **fields))
        return self.next_id

    def readable(self, tally: Tally) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.fail(tally, "tcp")
            return
        buf = self.inbuf + data
        if self.state == UPGRADING:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.inbuf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(tally, f"http {buf[9:12].decode('ascii', 'replace')}")
                return
            buf = buf[end + 4 :]
            self.state = JOINING
            self.send(self.hello + self._joins())
        frames, self.inbuf = wire.frames_with_opcodes(buf)
        for opcode, payload in frames:
            if self.state == CLOSED:
                return
            self._frame(tally, opcode, payload)

    def _joins(self) -> bytes:
        if self.conn.role == "churner":  # churners join as they churn
            self.joins_left = 0
            return b""
        self.joins_left = len(self.conn.channels)
        return b"".join(
            wire.request(t="join", id=k + 1, ch=ch) for k, ch in enumerate(self.conn.channels)
        )

    def _frame(self, tally: Tally, opcode: int, payload: bytes) -> None:
        if opcode == 0x8:
            code = wire.close_code(payload)
            self.fail(tally, f"close {code}")
        elif opcode == 0x9:
            self.send(wire.client_frame(payload, 0xA))  # pong: the server's heartbeat
        elif opcode == 0x2:
            self._message(tally, msgpack.unpackb(payload))

    def _message(self, tally: Tally, frame: dict[str, Any]) -> None:
        t = frame.get("t")
        if t == "msg":
            if frame.get("ev") == EVENT:
                tally.delivered(self, frame.get("data"))
        elif t in ("member_join", "member_leave", "member_update"):
            tally.presence(self, _marked(frame.get("member")))
        elif t == "presence":
            entries = [*frame.get("joins", ()), *frame.get("leaves", ()), *frame.get("updates", ())]
            tally.presence(self, sum(_marked(e) for e in entries))
        elif t == "ok":
            self._ok(tally, frame.get("id"))
        elif t == "err":
            self._err(tally, frame.get("id"), str(frame.get("code")))
        elif t == "welcome" and self.state == JOINING and self.joins_left == 0:
            self._ready(tally)

    def _ok(self, tally: Tally, rid: Any) -> None:
        if isinstance(rid, int) and rid <= len(self.conn.channels) and self.state == JOINING:
            self.joins_left -= 1
            if self.joins_left == 0:
                self._ready(tally)
        elif isinstance(rid, int):
            tally.acked(self, rid)

    def _err(self, tally: Tally, rid: Any, code: str) -> None:
        if self.state == JOINING:  # a join refused: the connection cannot do its part
            self.fail(tally, f"err {code}")
        else:
            tally.refused_request(self, rid if isinstance(rid, int) else -1, f"err {code}")

    def _ready(self, tally: Tally) -> None:
        self.state = READY
        self.attempt = 0
        tally.ready(self)

    def fail(self, tally: Tally, why: str) -> None:
        """The connection ended (a refusal if it was not ready yet); report it and close."""
        tally.lost(self, why, self.state == READY)
        self.close()

    def close(self, reset: bool = False) -> None:
        """Close the socket (``reset``: with a TCP RST, as a dropped connection does)."""
        if self.sock is not None:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        self.sock, self.state, self.in_channel = None, CLOSED, False


def _marked(member: Any) -> int:
    """1 if a presence entry is of a churner (its profile is ``CHURN_MARK``), else 0."""
    return int(isinstance(member, dict) and member.get("data") == CHURN_MARK)


def hello_frame(fields: dict[str, Any], token: str | None, profile: Any = None) -> bytes:
    """The hello this connection sends (protocol.md §3.1)."""
    hello = {"t": "hello", "v": 1, **fields}
    if token is not None:
        hello["token"] = token
    if profile is not None:
        hello["profile"] = profile
    return wire.request(**hello)
