"""The server API's reads that await: history and member listings from a shared broker
(bounded by ``[broker] command_timeout``: 503 ``broker_unavailable`` beyond), and the ranking
of an app's channels (yielding to other tasks as it goes).

Shared by the in-process API (rtcore.server.server.Server), the HTTP API and the settings page
(rtcore.server.http), which give them what they need rather than the server.
"""

from __future__ import annotations

from typing import Any

import trio

from rtcore import operations as api
from rtcore.config.model import BrokerConfig, Limits
from rtcore.core.app import App
from rtcore.engines.base import BrokerUnavailable
from rtcore.protocol import ErrorCode
from rtcore.protocol.position import Position

STATS_SLICE = 1000
"""Channels ranked between two checkpoints by :func:`largest_channels`."""


async def largest_channels(app: App, top: int) -> api.Sizes:
    """``api.largest`` over the app's channels, yielding to other tasks every
    :data:`STATS_SLICE` channels (a server with 100k channels answers the stats endpoint
    and the settings page without holding up its connections)."""
    groups = list(app.table.channels().items())
    best: api.Sizes = []
    for start in range(0, len(groups), STATS_SLICE):
        best = api.largest(best, groups[start : start + STATS_SLICE], top)
        await trio.lowlevel.checkpoint()
    return best


async def read_history(
    app: App,
    channel: str,
    since: Position | None,
    limit: int | None,
    reverse: bool,
    *,
    wall: float,
    limits: Limits,
    broker: BrokerConfig,
) -> api.Outcome:
    """A page of ``channel``'s history from wherever the broker keeps it (with Redis: the
    cluster's stream, bounded by ``broker.command_timeout``; 503 ``broker_unavailable``
    beyond)."""
    if not app.broker.shared:
        return api.history(app, channel, since, limit, reverse, wall, limits)
    retention, limit = api.history_request(app, channel, limit, limits)
    timeout = broker.command_timeout
    with trio.move_on_after(timeout):
        try:
            found = await app.broker.read_history(
                app.name, channel, since, limit + 1, reverse, retention
            )
        except BrokerUnavailable as exc:
            raise api.ApiError(503, ErrorCode.BROKER_UNAVAILABLE.value, str(exc)) from None
        return api.history_page(found, since, reverse, limit, limits)
    raise _too_slow(timeout)


async def cluster_members(
    app: App, channel: str, after: int | None, limit: int, *, broker: BrokerConfig
) -> tuple[list[Any], int | None]:
    """The broker's listing, bounded by ``broker.command_timeout`` (503 beyond)."""
    timeout = broker.command_timeout
    with trio.move_on_after(timeout):
        try:
            return await app.broker.members(app.name, channel, after, limit)
        except BrokerUnavailable as exc:
            raise api.ApiError(503, ErrorCode.BROKER_UNAVAILABLE.value, str(exc)) from None
    raise _too_slow(timeout)


def _too_slow(timeout: float) -> api.ApiError:
    return api.ApiError(
        503,
        ErrorCode.BROKER_UNAVAILABLE.value,
        f"the broker did not answer within {timeout:g} s",
    )
