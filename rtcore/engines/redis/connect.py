"""The Redis broker's two connections (coredis on trio, through anyio): one that multiplexes
commands and pipelines, and the pub/sub subscriber."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
from coredis.retry import NoRetryPolicy

from rtcore.config.model import BrokerConfig
from rtcore.engines.redis.subscriber import BatchingPubSub


class _NoEmptyTraceback(logging.Filter):
    """coredis logs "Connection closed unexpectedly!" with ``exc_info=True`` from a ``finally``
    block where no exception is being handled, and logging then prints a stray
    ``NoneType: None`` under the line when Redis drops; this drops that empty traceback (the
    broker logs the outage itself, once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None and record.exc_info[0] is None:
            record.exc_info = None
        return True


logging.getLogger("coredis").addFilter(_NoEmptyTraceback())


@asynccontextmanager
async def connect(config: BrokerConfig, node: str) -> AsyncIterator[tuple[Any, Any]]:
    """``(client, subscriber)`` to ``config.url`` (a Redis Cluster with ``config.cluster``),
    closed on exit. Commands never retry: a failure is the broker's to handle (it degrades)."""
    options: dict[str, Any] = {
        "connect_timeout": config.connect_timeout,
        "stream_timeout": config.command_timeout,
        "retry_policy": NoRetryPolicy(),
        "decode_responses": False,
        "client_name": f"rtcore-{node}",  # CLIENT LIST tells the nodes apart
    }
    factory: Any = coredis.RedisCluster if config.cluster else coredis.Redis
    client = factory.from_url(config.url, **options)
    async with client:
        options = {
            "ignore_subscribe_messages": True,
            "retry_policy": NoRetryPolicy(),
            "subscription_timeout": config.command_timeout,
        }
        if config.cluster:
            pubsub = client.sharded_pubsub(**options)
        else:
            pubsub = BatchingPubSub(client.connection_pool, **options)
        async with pubsub as subscriber:
            yield client, subscriber
