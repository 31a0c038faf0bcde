"""The client library, for trio and asyncio alike:
``async with rtcore.client.open_client(url) as client: ...``."""

from rtcore.client._client import FATAL_CLOSE_CODES, Client, HistoryPage, open_client
from rtcore.client._events import Connected, Disconnected, Event, EventStream, Recovered, Rejoining
from rtcore.client.errors import (
    BufferFullError,
    ChannelTokenError,
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
from rtcore.protocol.frames import (
    Gap,
    Joined,
    Left,
    MemberEvent,
    Msg,
    PresencePaused,
    PresenceResumed,
    UserEvent,
)
from rtcore.protocol.position import Position

__all__ = [
    "FATAL_CLOSE_CODES",
    "BufferFullError",
    "ChannelTokenError",
    "Client",
    "ClientError",
    "Connected",
    "ConnectionClosedError",
    "ConnectionLostError",
    "Disconnected",
    "Event",
    "Gap",
    "EventLoopError",
    "EventOverflowError",
    "HandshakeError",
    "EventStream",
    "HistoryPage",
    "Joined",
    "Left",
    "MemberEvent",
    "PresencePaused",
    "PresenceResumed",
    "Msg",
    "NotConnectedError",
    "Position",
    "Recovered",
    "Rejoining",
    "RequestError",
    "RequestTimeout",
    "UserEvent",
    "open_client",
]
