"""Channel and event name rules (protocol.md §4.1)."""

from __future__ import annotations

import re

from rtcore.protocol.codes import ErrorCode
from rtcore.protocol.errors import RemoteProtocolError
from rtcore.protocol.values import is_text

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:@/=+~#,-]{1,128}")
"""protocol.md §4.1: channel names are 1-128 characters of this set."""
MAX_EVENT_NAME = 128


def refuse(code: ErrorCode, message: str) -> RemoteProtocolError:
    """A refusal of what the peer sent: an error reply with ``code`` (protocol.md §6)."""
    return RemoteProtocolError(message, code=code)


def check_channel(name: str) -> None:
    if not CHANNEL_NAME.fullmatch(name):
        raise refuse(
            ErrorCode.INVALID_CHANNEL,
            f"channel name {name[:140]!r} must be 1-128 characters of "
            "A-Z a-z 0-9 _ . : @ / = + ~ # , -",
        )


def check_event(name: str) -> None:
    if not 1 <= len(name) <= MAX_EVENT_NAME or not is_text(name):
        raise refuse(
            ErrorCode.INVALID_EVENT,
            f"event name must be 1-{MAX_EVENT_NAME} characters of valid Unicode",
        )
