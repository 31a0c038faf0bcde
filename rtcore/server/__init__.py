"""The trio layer: the only place that does network I/O or reads clocks."""

from rtcore.server.server import ListenError, Server, UnknownAppError

__all__ = ["ListenError", "Server", "UnknownAppError"]
