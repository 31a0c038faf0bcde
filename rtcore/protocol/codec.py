"""msgpack codec: bytes <-> frame objects (protocol.md §3). The only msgpack importer.

Decoding is total: any bytes either become a frame or raise :class:`RemoteProtocolError`
(never another exception). Each frame type is described once, in ``_SPECS``: the wire key,
attribute name, field kind and whether it is required. Unknown keys are ignored so that newer
clients can talk to older servers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Mapping
from typing import Any, TypeVar

import attrs
import msgpack

from rtcore.protocol import frames as f
from rtcore.protocol.codes import CloseCode, ErrorCode
from rtcore.protocol.errors import LocalProtocolError, RemoteProtocolError

MAX_REQUEST_ID = 2**53 - 1
"""Request ids are unsigned integers that a JavaScript number can hold exactly."""


def _is_uint(v: object) -> bool:
    return type(v) is int and 0 <= v <= MAX_REQUEST_ID


def _is_str(v: object) -> bool:
    return type(v) is str


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_any(v: object) -> bool:
    return True


def _is_map(v: object) -> bool:
    return type(v) is dict


def _is_strs(v: object) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_maps(v: object) -> bool:
    return type(v) is list and all(type(x) is dict for x in v)


_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
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


_FieldSpec = tuple[str, str, str] | tuple[str, str, str, bool] | tuple[str, str, str, bool, bool]
"""``(wire key, attribute, kind[, required[, nullable]])``: the arguments of a :class:`_Field`."""


def _spec(*fields: _FieldSpec) -> tuple[_Field, ...]:
    return tuple(_Field(*fld) for fld in fields)


_ID: _FieldSpec = ("id", "id", "uint")
_CH: _FieldSpec = ("ch", "channel", "str")
_ECHO: _FieldSpec = ("echo", "echo", "bool", False)

F = TypeVar("F", f.ClientFrame, f.ServerFrame, f.Frame, f.Msg)
_Specs = Mapping[str, tuple[type[F], tuple[_Field, ...]]]
"""Frame ``t`` -> (class, fields). Optional fields default to the class default when absent."""

_MSG_FIELDS = _spec(
    ("ch", "channel", "str", True, True),
    ("ev", "event", "str"),
    ("data", "data", "any"),
    ("from", "sender", "str", True, True),
    ("ts", "ts", "uint"),
    ("mid", "mid", "str"),
    ("offset", "offset", "uint", False),
    ("epoch", "epoch", "str", False),
)
_MSG_SPECS: dict[str, tuple[type[f.Msg], tuple[_Field, ...]]] = {"msg": (f.Msg, _MSG_FIELDS)}
"""A message alone: as history stores and replays it."""

_CLIENT_SPECS: dict[str, tuple[type[f.ClientFrame], tuple[_Field, ...]]] = {
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
            ("data", "data", "any", False),
        ),
    ),
    "join": (
        f.Join,
        _spec(
            _ID,
            _CH,
            _ECHO,
            ("recover", "recover", "map", False, True),
            ("token", "token", "str", False, True),
            ("data", "data", "any", False),
        ),
    ),
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
    "refresh": (
        f.Refresh,
        _spec(_ID, ("token", "token", "str"), ("ch", "channel", "str", False, True)),
    ),
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
}
_SERVER_SPECS: dict[str, tuple[type[f.ServerFrame], tuple[_Field, ...]]] = {
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
    "msg": (f.Msg, _MSG_FIELDS),
    "presence": (
        f.PresenceDiff,
        _spec(
            _CH,
            ("joins", "joins", "maps", False),
            ("leaves", "leaves", "maps", False),
            ("updates", "updates", "maps", False),
        ),
    ),
    "presence_paused": (
        f.PresencePaused,
        _spec(_CH, ("members", "members", "uint"), ("max", "max", "uint")),
    ),
    "presence_resumed": (f.PresenceResumed, _spec(_CH, ("members", "members", "uint"))),
    "gap": (f.Gap, _spec(("ch", "channel", "str", True, True), ("reason", "reason", "str"))),
    "user": (
        f.UserEvent,
        _spec(
            ("ev", "kind", "str"),
            ("session", "session", "map", True, True),
            ("user", "user", "map", True, True),
            ("ts", "ts", "uint"),
        ),
    ),
    "left": (f.Left, _spec(_CH, ("reason", "reason", "str"), ("msg", "message", "str"))),
    "joined": (
        f.Joined,
        _spec(
            _CH,
            ("reason", "reason", "str"),
            ("epoch", "epoch", "str", False),
            ("offset", "offset", "uint", False),
        ),
    ),
}
for _kind in f.MemberEvent.TYPES:
    _SERVER_SPECS[_kind] = (
        f.MemberEvent,
        _spec(
            _CH,
            ("member", "member", "map"),
            ("first", "first", "bool", False),
            ("last", "last", "bool", False),
        ),
    )

_SPECS: dict[str, tuple[type[f.Frame], tuple[_Field, ...]]] = {**_CLIENT_SPECS, **_SERVER_SPECS}

CLIENT_TYPES = frozenset(_CLIENT_SPECS)
SERVER_TYPES = frozenset(_SERVER_SPECS)
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


_PACKERS = threading.local()
"""Each thread's msgpack packer (``packb`` would build one per call: half its cost for a
message; a packer is not for two threads at once)."""


def pack(value: object) -> bytes:
    """Encode one value (as ``msgpack.packb(value, use_bin_type=True)``); a value msgpack
    cannot encode is a bug of the caller."""
    try:
        packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    try:  # a failed pack leaves the packer empty (msgpack resets its buffer)
        return packer.pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(value).__name__}: {exc}") from exc


def decode_client_frame(data: bytes) -> f.ClientFrame:
    """Decode one frame a client sent (the server's side).

    Raises:
        RemoteProtocolError: with ``close_code`` set when the bytes are not a msgpack map with
            a string ``t``; without it (an ``err`` reply) for an unknown type or a bad field.
    """
    return _from_map(unpack(data), _CLIENT_SPECS, _CLIENT_SPECS)


def decode_server_frame(data: bytes) -> f.ServerFrame:
    """Decode one frame the server sent (the client's side); raises like
    :func:`decode_client_frame`."""
    return _from_map(unpack(data), _SERVER_SPECS, _SERVER_SPECS)


def decode_msg(data: bytes) -> f.Msg:
    """Decode one ``msg`` frame (a message history stored); any other type is refused like
    an unknown one."""
    return _from_map(unpack(data), _MSG_SPECS, _MSG_SPECS)


def msg_from_map(obj: object) -> f.Msg:
    """The ``msg`` frame of one decoded msgpack value (an entry of a history reply)."""
    return _from_map(obj, _MSG_SPECS, _MSG_SPECS)


def decode(data: bytes, *, allowed: frozenset[str] = CLIENT_TYPES) -> f.Frame:
    """Decode one frame whose type is in ``allowed``; raises like :func:`decode_client_frame`
    (which, with :func:`decode_server_frame`, gives the narrower type)."""
    return _from_map(unpack(data), _SPECS, allowed)


def from_map(obj: object, *, allowed: frozenset[str] = CLIENT_TYPES) -> f.Frame:
    """The frame of one decoded msgpack value (say, a ``msg`` map inside a history reply);
    raises like :func:`decode`."""
    return _from_map(obj, _SPECS, allowed)


def _from_map(obj: object, specs: _Specs[F], allowed: Container[str]) -> F:
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
    cls, fields = specs[t]
    kwargs: dict[str, Any] = {}  # each value checked against its field's kind
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


def to_wire(frame: f.Frame) -> dict[str, Any]:
    """The msgpack map of a frame object; optional fields left at None (or, for arrays of
    strings, empty) are omitted."""
    kind = type(frame)
    if kind is f.Msg or kind is f.Ok:  # one per message and per reply: written out
        return _msg_or_ok(frame)  # type: ignore[arg-type]
    return spec_to_wire(frame)


def spec_to_wire(frame: f.Frame) -> dict[str, Any]:
    """:func:`to_wire` read off ``_SPECS``, for every frame type: the definition that its
    shortcuts for ``msg`` and ``ok`` must equal, key order included (tests/unit/test_codec.py)."""
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


def _msg_or_ok(frame: f.Msg | f.Ok) -> dict[str, Any]:
    """:func:`to_wire` of the two frames on the message path, field by field in ``_SPECS``'
    order (tests/unit/test_codec.py checks it against the generic path)."""
    if type(frame) is f.Ok:
        data = frame.data
        if data is None or data == ():
            return {"t": "ok", "id": frame.id}
        return {"t": "ok", "id": frame.id, "data": list(data) if type(data) is tuple else data}
    assert type(frame) is f.Msg
    data = frame.data
    out = {
        "t": "msg",
        "ch": frame.channel,
        "ev": frame.event,
        "data": list(data) if type(data) is tuple else data,
        "from": frame.sender,
        "ts": frame.ts,
        "mid": frame.mid,
    }
    if frame.offset is not None:
        out["offset"] = frame.offset
    if frame.epoch is not None:
        out["epoch"] = frame.epoch
    return out


def encode(frame: f.Frame) -> bytes:
    """Encode a frame object to msgpack bytes."""
    return pack(to_wire(frame))
