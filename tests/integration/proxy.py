"""A TCP proxy on 127.0.0.1 that a test can cut (abrupt drops, with RST) and point elsewhere:
the network failures and node moves that recovery is for."""

from __future__ import annotations

import socket
import struct

import trio


def _reset(stream: trio.SocketStream) -> None:
    """Close with RST rather than FIN: the peer sees the connection vanish."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


class Proxy:
    """Forwards each accepted connection to ``target``; :meth:`cut` drops every open one.

    While ``refusing``, new connections are reset at once (the client retries with backoff).
    With ``more`` targets it is a load balancer: each new connection goes to the next target
    in turn, or to the one after if that one refuses (a node down).
    """

    def __init__(self, target: tuple[str, int], *more: tuple[str, int]) -> None:
        self.target = target
        self.targets = [target, *more]
        self._turn = 0
        self.refusing = False
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.accepted = 0
        self._pairs: list[tuple[trio.SocketStream, trio.SocketStream]] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = listener.socket.getsockname()[:2]
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                client = await listener.accept()
                self.accepted += 1
                if self.refusing:
                    _reset(client)
                    continue
                nursery.start_soon(self._pair, client)

    async def _upstream(self) -> trio.SocketStream | None:
        """A connection to the next target that takes one (round robin); None if none does."""
        targets = self.targets if len(self.targets) > 1 else [self.target]
        self._turn += 1
        for i in range(len(targets)):
            try:
                return await trio.open_tcp_stream(*targets[(self._turn + i) % len(targets)])
            except OSError:
                continue
        return None

    async def _pair(self, client: trio.SocketStream) -> None:
        upstream = await self._upstream()
        if upstream is None:
            _reset(client)
            return
        pair = (client, upstream)
        self._pairs.append(pair)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
        if pair in self._pairs:
            self._pairs.remove(pair)
            for stream in pair:
                _reset(stream)

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def cut(self) -> None:
        """Drop every open connection abruptly (RST both ways, no close frame)."""
        pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for stream in pair:
                _reset(stream)

    def url(self) -> str:
        host, port = self.address
        return f"ws://{host}:{port}/"
