"""The server library: an app's backend drives rtcore over its HTTP server API (docs/api.md).

``ServerAPI`` is synchronous (Flask, Django, scripts); ``AsyncServerAPI`` is async and runs under
trio (or asyncio) through httpx. Both speak msgpack, so data round-trips exactly (bytes
included), and raise :class:`ServerAPIError` with the server's code on any refusal::

    api = ServerAPI("http://127.0.0.1:8766", app="chat", secret=os.environ["CHAT_SERVER_SECRET"])
    api.send("lobby", "news", {"headline": "..."})
    api.publish_user_event("user-42", "signout", session={"id": "s-1"})

Each call is described once, in ``_calls`` (its requests, how its reply is read, how a listing
pages); ``_sync`` and ``_async`` are the two thin drivers that make the requests.
"""

from __future__ import annotations

from rtcore.backend._async import AsyncServerAPI
from rtcore.backend._errors import ServerAPIError
from rtcore.backend._sync import ServerAPI

__all__ = ["AsyncServerAPI", "ServerAPI", "ServerAPIError"]
