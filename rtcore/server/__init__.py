"""The trio layer: the only place that does network I/O or reads clocks."""

from rtcore.server.server import Server, UnknownAppError

__all__ = ["Server", "UnknownAppError"]
