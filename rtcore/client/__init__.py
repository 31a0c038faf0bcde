"""The client library, for trio and asyncio alike:
``async with rtcore.client.open_client(url) as client: ...``."""

from rtcore.client._client import FATAL_CLOSE_CODES, Client, HistoryPage, open_client
from rtcore.client._events import Connected, Disconnected, Event, EventStream, Recovered
from rtcore.client.errors import (
    BufferFullError,
    ClientError,
    ConnectionClosedError,
    ConnectionLostError,
    EventLoopError,
    EventOverflowError,
    HandshakeError,
    NotConnectedError,
    RequestError,
    RequestTimeout,
)
from rtcore.protocol.frames import Joined, Left, MemberEvent, Msg, UserEvent
from rtcore.protocol.position import Position

__all__ = [
    "FATAL_CLOSE_CODES",
    "BufferFullError",
    "Client",
    "ClientError",
    "Connected",
    "ConnectionClosedError",
    "ConnectionLostError",
    "Disconnected",
    "Event",
    "EventLoopError",
    "EventOverflowError",
    "HandshakeError",
    "EventStream",
    "HistoryPage",
    "Joined",
    "Left",
    "MemberEvent",
    "Msg",
    "NotConnectedError",
    "Position",
    "Recovered",
    "RequestError",
    "RequestTimeout",
    "UserEvent",
    "open_client",
]
