"""Exceptions of the sans-IO core.

Whose fault it was decides the class::

    RtcoreError
    ├── RemoteProtocolError   the peer sent something wrong
    │     .close_code set  -> the connection must be closed with it
    │     .close_code None -> answer with an ``err`` reply (``code``, ``request_id``)
    └── LocalProtocolError    rtcore itself misbehaved (a bug): close with 1011
"""

from __future__ import annotations

from rtcore.protocol.codes import CloseCode, ErrorCode


class RtcoreError(Exception):
    """Base of every exception rtcore raises on purpose."""


class RemoteProtocolError(RtcoreError):
    """The peer broke the protocol.

    Attributes:
        code: the error code for an ``err`` reply.
        close_code: when set, the connection must be closed with this code instead of replying.
        request_id: the request's id when it could be read, so the reply can name it.
        frame_type: the frame's ``t`` when it could be read (e.g. ``"hello"``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.BAD_REQUEST,
        close_code: CloseCode | None = None,
        request_id: int | None = None,
        frame_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.close_code = close_code
        self.request_id = request_id
        self.frame_type = frame_type


class LocalProtocolError(RtcoreError):
    """rtcore tried to do something the protocol forbids: a bug in rtcore."""
