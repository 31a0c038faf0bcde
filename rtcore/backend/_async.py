"""The async driver (trio or asyncio): each :data:`~rtcore.backend._calls.Plan` run over
``httpx.AsyncClient``."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from rtcore.backend._calls import Call, Calls, Plan, Reply, headers, read_reply
from rtcore.backend._errors import unreachable

T = TypeVar("T")


class AsyncServerAPI:
    """The async server library (trio or asyncio); the same methods as
    :class:`~rtcore.backend.ServerAPI`. Use as an async context manager, or await
    :meth:`aclose`."""

    def __init__(self, url: str, app: str, secret: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=url, headers=headers(secret), timeout=timeout)
        self._calls = Calls(app)

    async def _run(self, plan: Plan[T]) -> T:
        """Make the plan's requests one after the other; its result."""
        try:
            call = next(plan)
            while True:
                call = plan.send(await self._exchange(call))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _exchange(self, call: Call) -> Reply:
        try:
            response = await self._http.send(call.request(self._http))
        except httpx.HTTPError as exc:
            raise unreachable(exc) from exc
        return read_reply(response)

    async def send(self, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to the channel's members; ``{"mid", "ts", "recipients"}``."""
        return await self._run(self._calls.send(channel, event, data))

    async def broadcast(self, event: str, data: Any = None) -> dict[str, Any]:
        return await self._run(self._calls.broadcast(event, data))

    async def get_members(self, channel: str) -> list[dict[str, Any]]:
        """Every member, ``{"id", "user", "data"}``, fetched page by page."""
        return await self._run(self._calls.members_all(channel))

    async def history(
        self,
        channel: str,
        since: dict[str, Any] | None = None,
        limit: int = 100,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """A page of the channel's history: ``{"messages", "epoch", "offset", "next"}``; pass
        ``next`` as ``since`` for the next page (None: that was the last)."""
        return await self._run(self._calls.history(channel, since, limit, reverse))

    async def get_history(self, channel: str) -> list[dict[str, Any]]:
        """Every message the channel's history holds, oldest first (page by page)."""
        return await self._run(self._calls.history_all(channel))

    async def publish_user_event(
        self,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Tell ``user``'s connections about their account; ``signout`` ends ``session``."""
        return await self._run(self._calls.user_event(user, event, session, data))

    async def disconnect_user(self, user: str) -> dict[str, Any]:
        return await self._run(self._calls.disconnect_user(user))

    async def disconnect_session(
        self, user: str, session: str, revoke: bool = False
    ) -> dict[str, Any]:
        """Close ``user``'s ``session`` (4017), or with ``revoke`` end it (4016)."""
        return await self._run(self._calls.disconnect_session(user, session, revoke))

    async def add_member(
        self, channel: str, user: str | None = None, conn: str | None = None
    ) -> dict[str, Any]:
        """Put every connection of ``user`` (or only connection ``conn``) into ``channel``,
        whatever its channel rules (protocol.md §5.7); a user-wide add also puts the user's
        later connections back at hello. ``{"added", "full"}`` (this node's counts)."""
        return await self._run(self._calls.add_member(channel, user, conn))

    async def remove_member(
        self,
        channel: str,
        user: str | None = None,
        conn: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Take every connection of ``user`` (or only ``conn``) out of ``channel``: each gets
        a ``left`` frame, reason ``removed`` (protocol.md §5.6). ``{"removed"}``."""
        return await self._run(self._calls.remove_member(channel, user, conn, message))

    async def stats(self) -> dict[str, Any]:
        return await self._run(self._calls.stats())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncServerAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
