"""A client's event handlers: plain functions, registered per event key and called inline by
the reader (an exception in one is logged, never passed to the reader)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger("rtcore.client")

Handler = Callable[..., object]
"""A handler, called with the arguments of its event key (see ``Client.on_*``)."""

MSG = "msg:"
"""Prefix of the keys of app events' handlers (``msg:chat``; ``msg:*`` for all)."""


class Handlers:
    """Event key (``connect``, ``member_join``, ``msg:chat``, ...) -> handlers, in order."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, list[Handler]] = defaultdict(list)

    def add(self, key: str, handler: Handler) -> None:
        self._by_key[key].append(handler)

    def remove_msg(self, event: str | None, handler: Handler | None) -> None:
        """Remove one app-event handler, every handler of an app event, or (``event`` None)
        every app-event handler; other keys' handlers stay."""
        if event is None:
            for key in [k for k in self._by_key if k.startswith(MSG)]:
                del self._by_key[key]
        elif handler is None:
            self._by_key.pop(MSG + event, None)
        else:
            handlers = self._by_key.get(MSG + event, [])
            if handler in handlers:
                handlers.remove(handler)

    def emit(self, key: str, *args: object) -> None:
        """Call ``key``'s handlers with ``args``; one that raises is logged and skipped."""
        for handler in list(self._by_key.get(key, ())):
            try:
                handler(*args)
            except Exception:
                log.exception("rtcore client: %s handler %r raised", key, handler)
