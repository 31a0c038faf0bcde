"""rtcore: a realtime messaging server for Python, built on trio.

``rtcore.Server`` is the embeddable server; ``rtcore.client`` the client library (for trio
and asyncio); ``protocol.md`` the wire format any client can implement.
"""

from typing import TYPE_CHECKING

from rtcore.config.model import Config, ConfigError, Limits
from rtcore.protocol import CloseCode, ErrorCode, RtcoreError

if TYPE_CHECKING:  # what __getattr__ gives, for type checkers (nothing is imported at run time)
    from rtcore.backend import AsyncServerAPI, ServerAPI, ServerAPIError
    from rtcore.operations import ApiError
    from rtcore.server import ListenError, Server, UnknownAppError

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The server (and with it trio) is imported on first use, so that importing the sans-IO
    # core -- rtcore.core.session.session, rtcore.protocol, ... -- never pulls in trio.
    if name in ("Server", "UnknownAppError", "ListenError"):
        from rtcore import server

        return getattr(server, name)
    if name in ("ServerAPI", "AsyncServerAPI", "ServerAPIError"):
        from rtcore import backend

        return getattr(backend, name)
    if name == "ApiError":  # what the in-process API raises for a bad request
        from rtcore import operations

        return operations.ApiError
    raise AttributeError(f"module 'rtcore' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "CloseCode",
    "Config",
    "ConfigError",
    "ErrorCode",
    "Limits",
    "ListenError",
    "RtcoreError",
    "AsyncServerAPI",
    "Server",
    "ServerAPI",
    "ServerAPIError",
    "UnknownAppError",
]
