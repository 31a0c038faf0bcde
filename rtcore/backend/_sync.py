"""The synchronous driver: each :data:`~rtcore.backend._calls.Plan` run over ``httpx.Client``."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from rtcore.backend._calls import Call, Calls, Plan, Reply, headers, read_reply
from rtcore.backend._errors import unreachable

T = TypeVar("T")


class ServerAPI:
    """The synchronous server library. Use as a context manager, or call :meth:`close`.

    Args:
        url: the server API's base URL (``[server] api_host:api_port``).
        app: the app to act on.
        secret: the app's ``server_secret``.
        timeout: seconds per HTTP call.
    """

    def __init__(self, url: str, app: str, secret: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=url, headers=headers(secret), timeout=timeout)
        self._calls = Calls(app)

    def _run(self, plan: Plan[T]) -> T:
        """Make the plan's requests one after the other; its result."""
        try:
            call = next(plan)
            while True:
                call = plan.send(self._exchange(call))
        except StopIteration as done:
            result: T = done.value
            return result

    def _exchange(self, call: Call) -> Reply:
        try:
            response = self._http.send(call.request(self._http))
        except httpx.HTTPError as exc:
            raise unreachable(exc) from exc
        return read_reply(response)

    def send(self, channel: str, event: str, data: Any = None) -> dict[str, Any]:
        """Deliver an event to the channel's members; ``{"mid", "ts", "recipients"}``."""
        return self._run(self._calls.send(channel, event, data))

    def broadcast(self, event: str, data: Any = None) -> dict[str, Any]:
        return self._run(self._calls.broadcast(event, data))

    def get_members(self, channel: str) -> list[dict[str, Any]]:
        """Every member, ``{"id", "user", "data"}``, fetched page by page."""
        return self._run(self._calls.members_all(channel))

    def history(
        self,
        channel: str,
        since: dict[str, Any] | None = None,
        limit: int = 100,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """A page of the channel's history: ``{"messages", "epoch", "offset", "next"}``; pass
        ``next`` as ``since`` for the next page (None: that was the last)."""
        return self._run(self._calls.history(channel, since, limit, reverse))

    def get_history(self, channel: str) -> list[dict[str, Any]]:
        """Every message the channel's history holds, oldest first (page by page)."""
        return self._run(self._calls.history_all(channel))

    def publish_user_event(
        self,
        user: str,
        event: str,
        session: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Tell ``user``'s connections about their account; ``signout`` ends ``session``."""
        return self._run(self._calls.user_event(user, event, session, data))

    def disconnect_user(self, user: str) -> dict[str, Any]:
        return self._run(self._calls.disconnect_user(user))

    def disconnect_session(self, user: str, session: str, revoke: bool = False) -> dict[str, Any]:
        """Close ``user``'s ``session`` (4017), or with ``revoke`` end it (4016)."""
        return self._run(self._calls.disconnect_session(user, session, revoke))

    def add_member(
        self, channel: str, user: str | None = None, conn: str | None = None
    ) -> dict[str, Any]:
        """Put every connection of ``user`` (or only connection ``conn``) into ``channel``,
        whatever its channel rules (protocol.md §5.7); a user-wide add also puts the user's
        later connections back at hello. ``{"added", "full"}`` (this node's counts)."""
        return self._run(self._calls.add_member(channel, user, conn))

    def remove_member(
        self,
        channel: str,
        user: str | None = None,
        conn: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Take every connection of ``user`` (or only ``conn``) out of ``channel``: each gets
        a ``left`` frame, reason ``removed`` (protocol.md §5.6). ``{"removed"}``."""
        return self._run(self._calls.remove_member(channel, user, conn, message))

    def stats(self) -> dict[str, Any]:
        return self._run(self._calls.stats())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
