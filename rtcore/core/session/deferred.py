"""A request whose answer needs the broker (sans-IO): see
``rtcore.core.session.session``'s module doc."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from rtcore.protocol.errors import LocalProtocolError

if TYPE_CHECKING:
    from rtcore.protocol.close import Close


@attrs.define(slots=True)
class Deferred:
    """A request whose answer needs the broker (or the app's hook): the server awaits
    ``wait()``, then calls :meth:`Session.resume` with the value (or why there is none)."""

    request_id: int
    wait: Callable[[], Awaitable[Any]]
    """Makes the coroutine to await (the broker's): its value goes to ``then``."""
    then: Callable[[Any, float, float], Any]
    """``(value, now, wall)`` -> the ``ok`` reply's result, or another :class:`Deferred`;
    may raise :class:`RemoteProtocolError` (an ``err`` reply)."""
    resume: Callable[[Any, str | None, float, float], Close | None] | None = None
    """Instead of ``then``: ``(value, failure, now, wall)`` does all that follows itself
    (a shared rate limit: the request is then handled, or refused)."""
    undo: Callable[[], object] | None = None
    """Takes back what the request did before it was deferred, when the broker's answer does
    not come (a join refused ``broker_unavailable`` makes no member: protocol.md §6)."""
    bounded: bool = False
    """``wait()`` bounds itself (a send to a channel with history: its outcome must be
    known before it is answered, protocol.md §4.8); the server does not cut it at
    ``command_timeout``."""
    timeout: float | None = None
    """Seconds the server waits for ``wait()`` (None: ``[broker] command_timeout``); a hook
    call's is the hook's timeout (its client ends the call by then itself)."""


def unused_then(value: object, now: float, wall: float) -> dict[str, Any]:
    """The ``then`` of a :class:`Deferred` that has its own ``resume``."""
    raise LocalProtocolError("a deferred request with its own resume has no then")
