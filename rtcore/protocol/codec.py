"""msgpack codec: bytes <-> frame objects (protocol.md §3). The only msgpack importer.

Decoding is total: any bytes either become a frame or raise :class:`RemoteProtocolError`
(never another exception). Each frame type is described once, in ``_SPECS``: the wire key,
attribute name, field kind and whether it is required. Unknown keys are ignored so that newer
clients can talk to older servers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from rtcore.protocol import frames as f
from rtcore.protocol.codes import CloseCode, ErrorCode
from rtcore.protocol.errors import LocalProtocolError, RemoteProtocolError

MAX_REQUEST_ID = 2**53 - 1
"""Request ids are unsigned integers that a JavaScript number can hold exactly."""


def _is_uint(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_REQUEST_ID


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_any(v: Any) -> bool:
    return True


def _is_map(v: Any) -> bool:
    return type(v) is dict


def _is_strs(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_maps(v: Any) -> bool:
    return type(v) is list and all(type(x) is dict for x in v)


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "uint": (_is_uint, "an unsigned integer below 2**53"),
    "str": (_is_str, "a string"),
    "bool": (_is_bool, "a boolean"),
    "any": (_is_any, "any value"),
    "map": (_is_map, "a map"),
    "strs": (_is_strs, "an array of strings"),
    "maps": (_is_maps, "an array of maps"),
}


@attrs.frozen
class _Field:
    wire: str
    attr: str
    kind: str
    required: bool = True
    nullable: bool = False
    """A nil on the wire is accepted (and encoded when the value is None)."""


def _spec(*fields: tuple[Any, ...]) -> tuple[_Field, ...]:
    return tuple(_Field(*fld) for fld in fields)


_ID = ("id", "id", "uint")
_CH = ("ch", "channel", "str")
_ECHO = ("echo", "echo", "bool", False)

# type -> (class, fields). Optional fields default to the class default when absent.
_SPECS: dict[str, tuple[type, tuple[_Field, ...]]] = {
    "hello": (
        f.Hello,
        _spec(
            ("v", "version", "uint"),
            ("app", "app", "str", False, True),
            ("key", "key", "str", False, True),
            ("token", "token", "str", False, True),
            ("profile", "profile", "any", False),
            ("echo", "echo", "bool", False),
            ("features", "features", "strs", False),
        ),
    ),
    "join": (f.Join, _spec(_ID, _CH, _ECHO, ("recover", "recover", "map", False, True))),
    "leave": (f.Leave, _spec(_ID, _CH, _ECHO)),
    "members": (
        f.GetMembers,
        _spec(_ID, _CH, ("after", "after", "uint", False, True), ("limit", "limit", "uint", False)),
    ),
    "profile": (f.UpdateProfile, _spec(_ID, ("data", "data", "any"), _ECHO)),
    "send": (
        f.Send,
        _spec(_ID, _CH, ("ev", "event", "str"), ("data", "data", "any", False), _ECHO),
    ),
    "refresh": (f.Refresh, _spec(_ID, ("token", "token", "str"))),
    "history": (
        f.History,
        _spec(
            _ID,
            _CH,
            ("since", "since", "map", False, True),
            ("limit", "limit", "uint", False),
            ("reverse", "reverse", "bool", False),
        ),
    ),
    "broadcast": (
        f.Broadcast,
        _spec(_ID, ("ev", "event", "str"), ("data", "data", "any", False), _ECHO),
    ),
    # server -> client
    "welcome": (
        f.Welcome,
        _spec(
            ("v", "version", "uint"),
            ("conn", "conn", "str"),
            ("time", "time", "uint"),
            ("hb", "heartbeat", "uint"),
            ("limits", "limits", "map"),
            ("user", "user", "str", False, True),
            ("features", "features", "strs", False),
        ),
    ),
    "ok": (f.Ok, _spec(_ID, ("data", "data", "any", False))),
    "err": (
        f.Err,
        _spec(
            ("id", "id", "uint", True, True),
            ("code", "code", "str"),
            ("msg", "message", "str"),
            ("limiter", "limiter", "str", False),
            ("retry_after", "retry_after", "uint", False),
        ),
    ),
    "msg": (
        f.Msg,
        _spec(
            ("ch", "channel", "str", True, True),
            ("ev", "event", "str"),
            ("data", "data", "any"),
            ("from", "sender", "str", True, True),
            ("ts", "ts", "uint"),
            ("mid", "mid", "str"),
            ("offset", "offset", "uint", False),
            ("epoch", "epoch", "str", False),
        ),
    ),
    "presence": (
        f.PresenceDiff,
        _spec(
            _CH,
            ("joins", "joins", "maps", False),
            ("leaves", "leaves", "maps", False),
            ("updates", "updates", "maps", False),
        ),
    ),
    "user": (
        f.UserEvent,
        _spec(
            ("ev", "kind", "str"),
            ("session", "session", "map", True, True),
            ("user", "user", "map", True, True),
            ("ts", "ts", "uint"),
        ),
    ),
}
for _kind in f.MemberEvent.TYPES:
    _SPECS[_kind] = (
        f.MemberEvent,
        _spec(
            _CH,
            ("member", "member", "map"),
            ("first", "first", "bool", False),
            ("last", "last", "bool", False),
        ),
    )

CLIENT_TYPES = frozenset(
    {"hello", "join", "leave", "members", "profile", "send", "broadcast", "refresh", "history"}
)
SERVER_TYPES = frozenset(_SPECS) - CLIENT_TYPES
_WIRE_TYPE: dict[type, str] = {cls: t for t, (cls, _) in _SPECS.items() if cls is not f.MemberEvent}


def unpack(data: bytes) -> Any:
    """Decode one msgpack value, translating every msgpack failure to a protocol error.

    The size of ``data`` is bounded before this, by the WebSocket layer's message limit.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # ValueError covers ExtraData, FormatError, StackError and bad UTF-8; TypeError an
        # unhashable map key (e.g. an array used as a key).
        raise RemoteProtocolError(
            f"not a msgpack value: {exc or type(exc).__name__}",
            close_code=CloseCode.PROTOCOL_ERROR,
        ) from exc


def pack(value: Any) -> bytes:
    """Encode one value; a value msgpack cannot encode is a bug of the caller."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(value).__name__}: {exc}") from exc


def decode(data: bytes, *, allowed: frozenset[str] = CLIENT_TYPES) -> Any:
    """Decode one frame whose type is in ``allowed``.

    Raises:
        RemoteProtocolError: with ``close_code`` set when the bytes are not a msgpack map with
            a string ``t``; without it (an ``err`` reply) for an unknown type or a bad field.
    """
    return from_map(unpack(data), allowed=allowed)


def from_map(obj: Any, *, allowed: frozenset[str] = CLIENT_TYPES) -> Any:
    """The frame of one decoded msgpack value (say, a ``msg`` map inside a history reply);
    raises like :func:`decode`."""
    if type(obj) is not dict:
        raise RemoteProtocolError(
            "a frame must be a msgpack map", close_code=CloseCode.PROTOCOL_ERROR
        )
    t = obj.get("t")
    if type(t) is not str:
        raise RemoteProtocolError(
            "a frame must have a string 't'", close_code=CloseCode.PROTOCOL_ERROR
        )
    rid = obj.get("id")
    request_id = rid if _is_uint(rid) else None
    if t not in allowed:
        raise RemoteProtocolError(
            f"unknown frame type {t!r}",
            code=ErrorCode.UNKNOWN_TYPE,
            request_id=request_id,
            frame_type=t,
        )
    cls, fields = _SPECS[t]
    kwargs: dict[str, Any] = {}
    for fld in fields:
        if fld.wire not in obj:
            if fld.required:
                raise RemoteProtocolError(
                    f"{t}: missing field {fld.wire!r}", request_id=request_id, frame_type=t
                )
            continue
        value = obj[fld.wire]
        check, what = _KINDS[fld.kind]
        if not (check(value) or (value is None and fld.nullable)):
            raise RemoteProtocolError(
                f"{t}: field {fld.wire!r} must be {what}", request_id=request_id, frame_type=t
            )
        kwargs[fld.attr] = tuple(value) if fld.kind == "strs" else value
    if cls is f.MemberEvent:
        kwargs["kind"] = t
    return cls(**kwargs)


def to_wire(frame: Any) -> dict[str, Any]:
    """The msgpack map of a frame object; optional fields left at None (or, for arrays of
    strings, empty) are omitted."""
    if isinstance(frame, f.MemberEvent):
        t = frame.kind
    else:
        try:
            t = _WIRE_TYPE[type(frame)]
        except KeyError:
            raise LocalProtocolError(f"not a frame: {frame!r}") from None
    out: dict[str, Any] = {"t": t}
    for fld in _SPECS[t][1]:
        value = getattr(frame, fld.attr)
        if (value is None or value == ()) and not fld.required:
            continue
        out[fld.wire] = list(value) if type(value) is tuple else value
    return out


def encode(frame: Any) -> bytes:
    """Encode a frame object to msgpack bytes."""
    return pack(to_wire(frame))
