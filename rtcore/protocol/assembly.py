"""WebSocket message assembly: a message's fragments, as wsproto hands them over, joined into
one complete message under a size limit (sans-IO: no sockets, no clock, no event loop).

Theory of operation: the caller feeds each data event's payload (``bytes``, or ``str`` for a
text message; wsproto may hand a binary payload over as a ``bytearray``, which the caller
makes ``bytes``) and its ``message_finished`` flag to :meth:`MessageAssembler.add`, which
returns the complete message with its last fragment and None before it. Both rtcore's server
(``server/connection.py``) and its client (``client/_websocket.py``) assemble through it.

Invariants:

- The limit covers the whole message: the running total of its fragments' lengths is checked
  before a fragment is kept, so at most ``limit`` units are ever buffered. ``limit`` is passed
  with every fragment (the server's may change on a settings reload).
- A message over the limit raises :class:`MessageTooBig`; the caller closes the connection
  (1009), so the assembler is not used again.
- A message in one piece (the usual case) is returned as it came: no list, no copy.
- Text and binary messages are assembled alike (a text message's length is counted in
  characters, as ``len`` counts a ``str``); wsproto keeps every fragment of one message of
  the message's own type.
"""

from __future__ import annotations

from typing import AnyStr, cast

from rtcore.protocol.codes import CloseCode
from rtcore.protocol.errors import RemoteProtocolError


class MessageTooBig(RemoteProtocolError):
    """The peer sent a message larger than the limit: close with 1009.

    Attributes:
        limit: the limit it exceeded.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"message exceeds {limit} bytes", close_code=CloseCode.MESSAGE_TOO_BIG)
        self.limit = limit


def whole(data: AnyStr, limit: int) -> AnyStr:
    """A message that came in one piece, checked against ``limit`` as :meth:`MessageAssembler.add`
    checks one: a caller needs an assembler only once a message comes in fragments (the
    server makes one then: idle connections are what it has most of).

    Raises:
        MessageTooBig: the message exceeds ``limit``.
    """
    if len(data) > limit:
        raise MessageTooBig(limit)
    return data


class MessageAssembler:
    """One connection's partly received message."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes | str] | None = None
        """The fragments so far of a message that came in more than one; None between
        messages and for a message in one piece."""
        self._size = 0

    def add(self, data: AnyStr, finished: bool, limit: int) -> AnyStr | None:
        """Take one fragment; the complete message once ``finished``, else None.

        Raises:
            MessageTooBig: the message exceeds ``limit`` with this fragment.
        """
        self._size += len(data)
        if self._size > limit:
            raise MessageTooBig(limit)
        if finished and self._parts is None:
            self._size = 0
            return data  # the usual case: a message in one piece
        parts = self._parts
        if parts is None:
            parts = self._parts = []
        parts.append(data)
        if not finished:
            return None
        self._parts, self._size = None, 0
        return data[:0].join(cast("list[AnyStr]", parts))


def assemble(
    assembler: MessageAssembler | None, data: AnyStr, finished: bool, limit: int
) -> tuple[MessageAssembler | None, AnyStr | None]:
    """One data event's payload through ``assembler``: (the assembler to keep, the complete
    message or None). ``assembler`` is None between messages: the caller holds one only
    while a message comes in fragments (a server's connections are mostly idle ones).

    Raises:
        MessageTooBig: the message exceeds ``limit``.
    """
    if assembler is None:
        if finished:
            return None, whole(data, limit)
        assembler = MessageAssembler()
    message = assembler.add(data, finished, limit)
    return (assembler if message is None else None), message
