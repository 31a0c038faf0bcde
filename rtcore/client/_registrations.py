"""The client's handler registrations (``on``, ``on_join``, ...): the public face of
:class:`._handlers.Handlers`, a base of :class:`rtcore.client.Client`."""

from __future__ import annotations

from collections.abc import Callable

from rtcore.client._events import Recovered
from rtcore.client._handlers import MSG, Handler, Handlers
from rtcore.client.errors import ConnectionClosedError
from rtcore.protocol import frames as f


class Registrations:
    """Registers handlers, called inline by the reader as frames arrive (an exception in
    one is logged and skipped)."""

    __slots__ = ()
    _handlers: Handlers

    def on(self, event: str, handler: Callable[[f.Msg], object]) -> None:
        """Call ``handler(msg)`` for every app event named ``event`` (``"*"``: all of them)."""
        self._handlers.add(MSG + event, handler)

    def once(self, event: str, handler: Callable[[f.Msg], object]) -> None:
        """Like :meth:`on`, for the next such event only."""

        def one_shot(msg: f.Msg) -> None:
            self.off(event, one_shot)
            handler(msg)

        self.on(event, one_shot)

    def off(self, event: str | None = None, handler: Handler | None = None) -> None:
        """Remove one handler, every handler of an event, or (no arguments) all app handlers."""
        self._handlers.remove_msg(event, handler)

    def on_join(self, handler: Callable[[f.MemberEvent], object]) -> None:
        """``handler(event: MemberEvent)`` when a member joins one of our channels."""
        self._handlers.add("member_join", handler)

    def on_leave(self, handler: Callable[[f.MemberEvent], object]) -> None:
        self._handlers.add("member_leave", handler)

    def on_update(self, handler: Callable[[f.MemberEvent], object]) -> None:
        self._handlers.add("member_update", handler)

    def on_presence_paused(self, handler: Callable[[f.PresencePaused], object]) -> None:
        """``handler(event: PresencePaused)``: a channel past its ``member_events_max``
        sends this connection no more join, leave and update events (protocol.md §5.2.2;
        only with ``presence_diffs=False``); :meth:`members` is empty until resumed."""
        self._handlers.add("presence_paused", handler)

    def on_presence_resumed(self, handler: Callable[[f.PresenceResumed], object]) -> None:
        """``handler(event: PresenceResumed)``: the channel's events are back; the client
        lists its members again into :meth:`members`."""
        self._handlers.add("presence_resumed", handler)

    def on_recover(self, handler: Callable[[Recovered], object]) -> None:
        """``handler(event: Recovered)`` after each rejoin of a channel this client had a
        position in (after a reconnect, or a join with ``recover``)."""
        self._handlers.add("recover", handler)

    def on_connect(self, handler: Callable[[str], object]) -> None:
        """``handler(conn_id)`` after every successful (re)connection."""
        self._handlers.add("connect", handler)

    def on_disconnect(self, handler: Callable[[int, str], object]) -> None:
        """``handler(code, reason)`` when a connection ends."""
        self._handlers.add("disconnect", handler)

    def on_reconnect_attempt(self, handler: Callable[[int], object]) -> None:
        """``handler(attempt)`` before each reconnection attempt (1, 2, ...)."""
        self._handlers.add("reconnect_attempt", handler)

    def on_error(self, handler: Callable[[Exception], object]) -> None:
        """``handler(exc)`` when a connection attempt fails or a rejoin is refused."""
        self._handlers.add("error", handler)

    def on_gap(self, handler: Callable[[f.Gap], object]) -> None:
        """``handler(gap: Gap)``: messages of ``gap.channel`` may have been missed (§5.5)."""
        self._handlers.add("gap", handler)

    def on_user_event(self, handler: Callable[[f.UserEvent], object]) -> None:
        """``handler(event: UserEvent)`` for events about this connection's own user
        (``event.kind``: signin, signout, profile_update, password_change, ...)."""
        self._handlers.add("user_event", handler)

    def on_left(self, handler: Callable[[f.Left], object]) -> None:
        """``handler(event: Left)`` when the server takes us out of a channel (protocol.md
        §5.6, ``event.reason`` says why); it is forgotten, not rejoined after a reconnect."""
        self._handlers.add("left", handler)

    def on_joined(self, handler: Callable[[f.Joined], object]) -> None:
        """``handler(event: Joined)`` when the server puts us into a channel (protocol.md
        §5.7): the app's backend added us, or our token's ``subscribe`` claim lists it. The
        server puts us back after a reconnect (then this fires again); we do not rejoin it."""
        self._handlers.add("joined", handler)

    def on_session_ended(self, handler: Callable[[ConnectionClosedError], object]) -> None:
        """``handler(exc: ConnectionClosedError)`` when the server ends this client's session
        (4016) or disconnects it (4017). The client stops: it does not reconnect with a token
        the server will refuse; open a new client with a new token."""
        self._handlers.add("session_ended", handler)
