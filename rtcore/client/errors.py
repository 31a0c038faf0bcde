"""Exceptions of the client library::

ClientError
├── HandshakeError        the server did not accept the WebSocket upgrade
├── EventLoopError        used outside trio/asyncio, or from another event loop than its own
├── RequestError          the server refused a request (``code`` from protocol.md §6)
├── RequestTimeout        no reply within ``request_timeout``
├── ChannelTokenError     the ``channel_token`` provider failed (raised, or returned no string)
├── NotConnectedError     disconnected and fail-fast, or the client is closed
├── BufferFullError       disconnected and the send buffer is full
├── ConnectionLostError   the connection dropped while the request awaited its reply
└── ConnectionClosedError the server closed the connection for good (fatal close code)
"""

from __future__ import annotations

from rtcore.protocol.errors import RtcoreError


class ClientError(RtcoreError):
    """Base of the client library's exceptions."""


RETRY_SAFE = frozenset({"broker_unavailable", "hook_unavailable", "rate_limited"})
"""Refusals for a passing reason that left no effect: the same request may be sent again
(protocol.md §6)."""


class RequestError(ClientError):
    """An ``err`` reply: the server refused the request.

    Attributes:
        code: the error code (see ``rtcore.ErrorCode``).
        message: the server's explanation.
        retry_safe: the refusal had no effect and its reason passes (``broker_unavailable``,
            ``hook_unavailable``, ``rate_limited``): sending the same request again later is
            safe.

    ``rate_limited`` waits are milliseconds (``retry_after_ms``), one unit with the wire and
    the JavaScript client; ``retry_after`` gives the same in seconds.
    """

    def __init__(
        self,
        code: str,
        message: str,
        limiter: str | None = None,
        retry_after_ms: int | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        if retry_after_ms is None and retry_after is not None:  # the old keyword, in seconds
            retry_after_ms = round(retry_after * 1000)
        self.code = code
        self.message = message
        self.limiter = limiter
        """For ``rate_limited``: the limiter that refused."""
        self.retry_after_ms = retry_after_ms
        """For ``rate_limited``: milliseconds until the request would be admitted, as on the
        wire (protocol.md §4) and in the JavaScript client's ``retryAfter``."""
        self.retry_safe = code in RETRY_SAFE

    @property
    def retry_after(self) -> float | None:
        """The same wait in seconds (``retry_after_ms / 1000``), ready for ``trio.sleep`` or
        ``asyncio.sleep``; kept for compatibility, as it has always been seconds."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000


class ChannelTokenError(ClientError):
    """The application's ``channel_token`` provider raised or returned something other than a
    string or None. A join raises it; a rejoin after a reconnect reports it to ``on_error``
    and tries again with backoff, keeping the channel."""


class HandshakeError(ClientError):
    """The server did not accept the WebSocket upgrade: it answered with an HTTP error
    (``status_code``), sent an invalid upgrade response, or hung up during the upgrade or
    the TLS handshake (``status_code`` is None). A TLS failure the server reported, such as
    an untrusted certificate, is an ``ssl.SSLError`` instead.

    Attributes:
        status_code: the HTTP status of the refusal, if there was one.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class EventLoopError(ClientError):
    """The client was used where it cannot run: outside a trio or asyncio event loop, or
    from an event loop (or thread) other than the one it was opened in. A client belongs to
    the loop that opened it; call it from there (from another thread:
    ``anyio.from_thread.run``, ``trio.from_thread.run`` or
    ``asyncio.run_coroutine_threadsafe``)."""


class RequestTimeout(ClientError):
    """The server did not answer within the client's ``request_timeout``."""


class NotConnectedError(ClientError):
    """The request cannot be sent: not connected (fail-fast mode) or the client is closed."""


class BufferFullError(ClientError):
    """Disconnected, and ``buffer_limit`` requests are already waiting for the connection."""


class ConnectionLostError(ClientError):
    """The connection dropped after the request was sent and before its reply arrived.

    The request may or may not have taken effect.
    """


class ConnectionClosedError(ClientError):
    """The server closed the connection with a code that reconnecting cannot fix.

    Attributes:
        code: the WebSocket close code (protocol.md §7).
        reason: the server's close reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the server ({code}): {reason}")
        self.code = code
        self.reason = reason


class EventOverflowError(ClientError):
    """An event iterator fell more than its ``maxsize`` events behind; it was stopped.

    Events are never dropped silently: the iterator raises this instead of skipping.
    """
