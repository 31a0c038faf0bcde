"""What crosses Redis pub/sub: the envelopes (sans-IO), and the member blob presence keeps.

Envelopes are msgpack arrays whose first element says what they are:

* ``["M", node, target, name, user, skip, data]``: a publication; ``data`` is the framed
  WebSocket message, fanned out as is on every node (never re-encoded).
* ``["P", node, kind, channel, member, flag, skip, members]``: a presence event built by a
  script (so that ``first``/``last`` are the cluster's): ``member`` is a :func:`member_blob`,
  ``flag`` is first (join) or last (leave) for the cluster, ``skip`` a member id or "",
  ``members`` the channel's member count in the cluster after the event (absent from the
  envelopes of older nodes).
* ``["C", node, op, args]``: a control operation every node applies to its own connections
  (user events, disconnects, ended sessions, server-side adds and removes).
* ``["H", node, target, name, user, skip, offset, epoch, data]``: a message of a channel with
  history, built by the publish script once it gave the message its offset (``data`` is the
  framed ``msg``, offset and epoch inside: :func:`msg_head` is its start).
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

MESSAGE = b"M"
PRESENCE = b"P"
CONTROL = b"C"
HISTORY = b"H"


def message(node: str, target: str, name: str | None, user: str | None, skip: str | None,
            data: bytes) -> bytes:  # fmt: skip
    packed: bytes = msgpack.packb([MESSAGE, node, target, name, user, skip, data])
    return packed


def control(node: str, op: str, args: Any) -> bytes:
    packed: bytes = msgpack.packb([CONTROL, node, op, args])
    return packed


def member_blob(user: str | None, info: Any) -> bytes:
    """What a presence hash stores for a member: the user id's length (2 bytes, big endian),
    the user id (UTF-8, empty when anonymous), then the member info as msgpack. The scripts
    read the user without a msgpack decoder (a profile may hold bin values)."""
    raw = (user or "").encode()
    if len(raw) > 0xFFFF:
        raise ValueError("a user id longer than 65,535 bytes")  # tokens' sub are far shorter
    packed: bytes = msgpack.packb(info)
    return len(raw).to_bytes(2, "big") + raw + packed


@attrs.frozen
class Envelope:
    """A decoded envelope."""

    kind: bytes
    node: str
    fields: tuple[Any, ...]


class BadEnvelope(Exception):
    """Bytes on an rtcore pub/sub channel that are not an envelope (another writer's, or a
    bug): logged and skipped by the node."""


def decode(data: bytes) -> Envelope:
    """An envelope; presence envelopes come from Lua (``cmsgpack``: strings as raw bytes)."""
    try:
        # Every envelope is a short array whose first item is a one-letter string: byte 2
        # says which. Presence comes from Lua, whose strings are raw bytes (a member blob is
        # not UTF-8); the others are rtcore's own msgpack.
        raw = data[2:3] in (PRESENCE, HISTORY)
        items = msgpack.unpackb(data, raw=raw, use_list=False)
        if not isinstance(items, tuple) or len(items) < 3:
            raise BadEnvelope(f"not an envelope: {data[:40]!r}")
        kind, node = items[0], items[1]
        kind = kind.encode() if isinstance(kind, str) else kind
        node = node.decode() if isinstance(node, bytes) else node
        if kind not in (MESSAGE, PRESENCE, CONTROL, HISTORY) or not isinstance(node, str):
            raise BadEnvelope(f"not an envelope: {data[:40]!r}")
        return Envelope(kind, node, items[2:])
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
        raise BadEnvelope(f"undecodable envelope: {exc}") from exc


def text(value: bytes | None) -> str | None:
    """A raw string field (None and "" stay as they are meant: absent)."""
    if value is None or value == b"":
        return None
    return value.decode()


def unpack_member(blob: bytes) -> tuple[str | None, Any]:
    """``(user or None, info)`` from :func:`member_blob`'s bytes."""
    n = int.from_bytes(blob[:2], "big")
    return (blob[2 : 2 + n].decode() or None), msgpack.unpackb(blob[2 + n :], raw=False)


def msg_head(wire: dict[str, Any]) -> bytes:
    """A ``msg``'s msgpack map without ``offset`` and ``epoch`` but counting them in its
    header: the publish script appends the two (a msg has fewer than 14 fields: a fixmap)."""
    packed: bytes = msgpack.packb(wire)
    count = len(wire)
    if count > 13 or packed[0] != 0x80 | count:
        raise ValueError("a msg map of more than 13 fields")  # our bug: frames are fixed
    return bytes([0x80 | (count + 2)]) + packed[1:]
