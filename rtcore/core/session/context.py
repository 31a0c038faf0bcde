"""What a request handler needs of its session (sans-IO): the narrow view that
:mod:`rtcore.core.session.requests` and :mod:`rtcore.core.session.history` take, so that
neither imports :class:`rtcore.core.session.session.Session` (which imports them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rtcore.config.model import Limits
    from rtcore.core.app import App
    from rtcore.core.auth import Principal
    from rtcore.core.members import Member
    from rtcore.core.permissions import ChannelToken
    from rtcore.core.session.deferred import Deferred
    from rtcore.protocol import ErrorCode
    from rtcore.protocol.close import Close

Result = dict[str, Any]
"""An ``ok`` reply's data: a map of values (protocol.md §4.3.1)."""


class Context(Protocol):
    """One established connection's session, as its requests see it."""

    conn_id: str
    remote: str
    """The peer's IP address."""
    app: App | None
    member: Member | None
    principal: Principal | None
    """The signed-in user; a ``refresh`` replaces it."""
    channel_tokens: Mapping[str, ChannelToken]
    """The channel tokens the connection holds, by channel (rtcore.core.session.access
    replaces it, never changes it)."""
    deferred: Deferred | None
    """A deferred request's resume may defer again (a history join waits for presence)."""

    @property
    def limits(self) -> Limits: ...

    def queue(self, data: bytes) -> None:
        """Queue a framed message for the connection (a replay), before the reply."""
        ...

    def error(self, request_id: int | None, code: ErrorCode, message: str) -> Close | None:
        """Reply ``err``."""
        ...

    def refuse(self, request_id: int, code: str, message: str) -> Close | None:
        """Reply ``err`` with any code (a hook's own), counted as a refusal."""
        ...

    def answer(self, request_id: int, result: Result | Deferred) -> Close | None:
        """Reply ``ok`` with ``result``, or defer again."""
        ...


def wants_echo(session: Context, echo: bool | None) -> bool:
    """The request's ``echo``, else the connection's default."""
    assert session.member is not None
    return session.member.echo if echo is None else echo
