"""The server API in process: the :class:`~rtcore.server.Server`'s methods a host app calls
(``server.send(...)``), on rtcore.operations as the HTTP API's endpoints are.

A base class of the Server, declaring the few attributes of it that these methods read.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any

import trio

from rtcore import operations as api
from rtcore.config.model import Config
from rtcore.core.app import App
from rtcore.core.members import Member
from rtcore.protocol import ErrorCode, RtcoreError
from rtcore.protocol.close import Close
from rtcore.protocol.position import Position
from rtcore.server import queries
from rtcore.server.flusher import Flusher


class UnknownAppError(RtcoreError, LookupError):
    """The host app named an app this server does not host."""


class InProcessAPI:
    """The server API's operations, called in process (the Server is one)."""

    config: Config
    apps: dict[str, App]
    connections: Sized
    flusher: Flusher
    wall: Callable[[], float]

    def close_members(self, closing: list[tuple[Member, Close]]) -> None:
        """Close the connections an operation ended (after what it queued for them)."""
        for member, close in closing:
            conn = member.outbox.owner
            if conn is not None:
                conn.request_close(close.code, close.reason)
        self.flusher.poke()

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise UnknownAppError(f"this server hosts no app {name!r}") from None

    def _run(self, outcome: api.Outcome) -> dict[str, Any]:
        self.close_members(outcome.closing)
        return outcome.result

    def send(self, app: str, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to every member of ``channel`` (sender: none, the host app).

        Returns ``{"mid", "ts", "recipients"}``. Raises ``rtcore.operations.ApiError`` for an
        invalid channel or event name, and ``UnknownAppError``.
        """
        return self._run(api.send(self.app(app), channel, event, data, self.wall()))

    def broadcast(self, app: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to every connection of ``app``."""
        return self._run(api.broadcast(self.app(app), event, data, self.wall()))

    def history(
        self,
        app: str,
        channel: str,
        since: Position | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """A page of ``channel``'s history, as the server API's (docs/api.md): ``{"messages",
        "epoch", "offset", "next"}``; pass ``next`` back as ``since`` (a
        :class:`~rtcore.protocol.position.Position`) for the next page. Raises
        ``rtcore.operations.ApiError``
        (``history_unavailable``, ``unrecoverable_position``, ...), and ``UnknownAppError``."""
        limits = self.config.limits
        the_app = self.app(app)
        if the_app.broker.shared:
            raise api.ApiError(
                400,
                ErrorCode.BAD_REQUEST.value,
                "with the Redis broker history is read asynchronously: await read_history()",
            )
        outcome = api.history(the_app, channel, since, limit, reverse, self.wall(), limits)
        return outcome.result

    async def read_history(
        self,
        app: str | App,
        channel: str,
        since: Position | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> api.Outcome:
        """A page of ``channel``'s history from wherever the broker keeps it (with Redis:
        the cluster's stream, bounded by ``[broker] command_timeout``; 503
        ``broker_unavailable`` beyond). :meth:`history` is the same for the memory broker."""
        the_app = self.app(app) if isinstance(app, str) else app
        config = self.config
        return await queries.read_history(
            the_app,
            channel,
            since,
            limit,
            reverse,
            wall=self.wall(),
            limits=config.limits,
            broker=config.broker,
        )

    def members(self, app: str, channel: str) -> list[dict[str, Any]]:
        """Every member of ``channel`` on this node as ``{"id", "user", "data"}``, in join
        order (whatever the channel's ``presence`` rule: the host app is trusted). With the
        Redis broker, :meth:`list_members` lists the whole cluster's."""
        members = self.app(app).table.members(api.valid_channel(channel))
        return [m.info(channel) for m in members.values()]

    async def list_members(
        self, app: str, channel: str, after: int | None = None, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of ``channel``'s members (the cluster's, with the Redis broker) and the
        cursor of the next page (None on the last). Raises ``rtcore.operations.ApiError``: 400/422
        for a bad limit or channel, 503 ``broker_unavailable`` when Redis cannot answer."""
        the_app = self.app(app)
        limit = api.members_limit(channel, limit, self.config.limits.max_members_page)
        if not the_app.broker.shared:
            page, cursor = the_app.table.page(channel, after, limit)
            return [m.info(channel) for m in page], cursor
        return await self.cluster_members(the_app, channel, after, limit)

    async def cluster_members(
        self, app: App, channel: str, after: int | None, limit: int
    ) -> tuple[list[Any], int | None]:
        """The broker's listing, bounded by ``[broker] command_timeout`` (503 beyond)."""
        return await queries.cluster_members(app, channel, after, limit, broker=self.config.broker)

    def publish_user_event(
        self,
        app: str,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Deliver a user event to ``user``'s connections (docs/api.md); ``signout`` ends
        ``session`` (its connections close with 4016 and its token is refused)."""
        return self._run(
            api.publish_user_event(
                self.app(app), user, event, session, data, trio.current_time(), self.wall()
            )
        )

    def disconnect_user(self, app: str, user: str) -> dict[str, Any]:
        """Close every connection of ``user`` with 4017."""
        return self._run(api.disconnect_user(self.app(app), user))

    def disconnect_session(
        self, app: str, user: str, session: str, revoke: bool = False
    ) -> dict[str, Any]:
        """Close the connections of ``user``'s ``session`` (4017), or with ``revoke`` end it
        (4016)."""
        return self._run(
            api.disconnect_session(
                self.app(app), user, session, revoke, trio.current_time(), self.wall()
            )
        )

    def add_member(
        self, app: str, channel: str, user: str | None = None, conn: str | None = None
    ) -> dict[str, Any]:
        """Put every connection of ``user`` (or only connection ``conn``) into ``channel``,
        whatever its channel rules but within ``max_channels`` (protocol.md §5.7); a
        user-wide add also puts the user's later connections back at hello. Returns
        ``{"added", "full"}`` (this node's). Raises ``rtcore.operations.ApiError`` (a bad
        channel name: 422 ``invalid_channel``; neither user nor conn: 400)."""
        limits = self.config.limits
        return self._run(
            api.add_member(self.app(app), channel, user, conn, limits.max_channels, self.wall())
        )

    def remove_member(
        self,
        app: str,
        channel: str,
        user: str | None = None,
        conn: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Take every connection of ``user`` (or only ``conn``) out of ``channel`` with a
        ``left`` frame, reason ``removed`` (protocol.md §5.6); returns ``{"removed"}``."""
        return self._run(api.remove_member(self.app(app), channel, user, conn, message))

    async def largest_channels(self, app: App, top: int) -> api.Sizes:
        """``api.largest`` over the app's channels, yielding to other tasks every
        :data:`rtcore.server.queries.STATS_SLICE` channels (a server with 100k channels
        answers the stats endpoint and the settings page without holding up its
        connections)."""
        return await queries.largest_channels(app, top)

    def stats(self) -> dict[str, Any]:
        """Server-wide counts, and each app's (as the HTTP stats endpoint gives them)."""
        return {
            "connections": len(self.connections),
            "slow_consumers": self.flusher.slow_consumers,
            "apps": {name: api.stats(a).result for name, a in self.apps.items()},
        }
