"""The server library's one exception, in rtcore's tree::

    RtcoreError
    └── ServerAPIError       the server refused the call (status, code, message from its
                             reply), or could not be reached (status None, code "unreachable")

Every method of ``ServerAPI`` and ``AsyncServerAPI`` raises it, and no other exception: httpx's
are translated once, in each driver's ``_exchange``.
"""

from __future__ import annotations

from rtcore.protocol import RtcoreError


class ServerAPIError(RtcoreError):
    """The server refused the call (``status``, ``code``, ``message`` from its reply), or could
    not be reached (``status`` None, ``code`` ``unreachable``)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def unreachable(exc: Exception) -> ServerAPIError:
    """The error for a call that got no HTTP reply (connection refused, timeout, ...)."""
    return ServerAPIError(None, "unreachable", str(exc) or type(exc).__name__)
