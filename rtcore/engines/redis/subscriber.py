"""The Redis broker's subscriber: coredis's pub/sub, handing over messages in batches.

coredis's ``PubSub`` forwards push messages from its connection one at a time, each through
a memory stream with its own checkpoint, and readers take them one at a time. A node then
runs a flush pass for nearly every message, writing each subscriber a frame or two per
``write`` call: a Redis node made 8-10 times the writes per delivery of a memory node and
fell behind (bench/RESULTS.md, "Two nodes over Redis"). Here both hops hand over everything
already received per wake-up, and :func:`receive_batch` returns it as one list, so a node
dispatches a burst and pokes its flusher once.

This overrides one private method of coredis 6.9 (``_consume_push_messages``) and reads its
private message stream; ``constraints.txt`` pins coredis, and every Redis test runs through
this class, so an incompatible coredis fails the suite rather than production. Redis
Cluster's ``ShardedPubSub`` is used as it is (one message per wake-up).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.patterns.pubsub import PubSub


def _drain(stream: Any, first: Any) -> list[Any]:
    """``first`` and whatever else ``stream`` holds already (no waiting)."""
    batch = [first]
    while True:
        try:
            batch.append(stream.receive_nowait())
        except anyio.WouldBlock:
            return batch


class BatchingPubSub(PubSub[bytes]):
    """coredis's standalone pub/sub, forwarding push messages in batches."""

    async def _consume_push_messages(self) -> None:
        buffer = self.connection._push_message_buffer_out
        try:
            while True:
                for response in _drain(buffer, await buffer.receive()):
                    self._last_checkin = time.monotonic()
                    self._send_stream.send_nowait(await self._handle_message(response))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise RedisConnectionError("Connection lost while waiting for push messages") from exc


async def receive_batch(pubsub: Any) -> list[Any]:
    """The next message and every other one already received (subscription acks filtered
    out as coredis does: they come back as None)."""
    stream = getattr(pubsub, "_receive_stream", None)
    if stream is None or not isinstance(pubsub, BatchingPubSub):
        message = await pubsub.get_message()
        return [] if message is None else [message]
    batch = _drain(stream, await stream.receive())
    return [m for m in map(pubsub._filter_ignored_messages, batch) if m is not None]
