"""Application values: what a profile or a message's data may hold (protocol.md §4.3.1).

A *value* is anything the server stores or relays for an app without interpreting it: a member
profile, the ``data`` of a ``send`` or ``broadcast``, the ``session`` and ``data`` of a user
event. Every output path must be able to encode what intake accepted -- msgpack (WebSocket
frames, msgpack replies of the server API) and JSON (the server API's default) -- so each value
is checked once, where it enters, by :func:`check`, and refused there with ``invalid_data``.

The definition, in one place:

* nil, booleans, strings, binary (``bytes`` / ``bytearray``; JSON: a base64 string), arrays
  (``list``, or a plain ``tuple``: not a named tuple such as msgpack's ``ExtType``) and maps
  (``dict``);
* integers from -2**63 to 2**64-1 (msgpack's range); floats that are finite (JSON has no NaN
  or Infinity);
* strings that are Unicode text UTF-8 can encode (no lone surrogates; msgpack itself refuses
  invalid UTF-8 when it decodes a frame);
* map keys that are strings or integers in the range above (not booleans, nil, floats or
  binary); JSON writes an integer key as its decimal string, so a map may not hold both ``1``
  and ``"1"``;
* at most :data:`MAX_DEPTH` nested arrays and maps (the outermost one counts as level 1);
* nothing else: msgpack ext types (including timestamps, ext -1) and any other Python object
  are refused.

The check is iterative (no recursion whatever the input) and visits each element once, so its
cost is linear in the size of the value and it stops at the first refusal, at most
:data:`MAX_DEPTH` levels down.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from rtcore.protocol.codes import ErrorCode
from rtcore.protocol.errors import RemoteProtocolError

MAX_DEPTH = 32
"""Arrays and maps nest at most this deep: ``[[1]]`` is 2 levels."""
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
"""msgpack's integer range. JavaScript numbers hold integers exactly only up to 2**53-1."""

_Path = tuple[Any, ...] | str
"""Where an element sits: the field name at the root, else (parent path, key or index)."""


def is_text(s: str) -> bool:
    """Whether UTF-8 can encode ``s`` (it has no lone surrogates)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class Budget:
    """What one value may contain, bounding the work of checking it and the memory it holds
    once decoded (protocol.md §4.3.1): a decoded empty array costs ~60 bytes for its one byte
    on the wire, so a size limit alone does not bound memory or CPU."""

    containers: int
    """Arrays and maps, the outermost one included."""
    items: int
    """Array elements plus map entries, at every level."""


DATA = Budget(containers=1024, items=1 << 20)
"""A message's ``data`` and a user event's ``session`` and ``data``: the items are bounded by
the message size already (each takes a byte at least)."""
PROFILE = Budget(containers=32, items=256)
"""A member profile, which the server holds for the connection's life and sends with each
of its presence events."""


def check(value: object, field: str, budget: Budget = DATA) -> None:
    """Accept ``value`` as the definition above says, or refuse it.

    Args:
        value: the value as decoded (or as the host application passed it).
        field: its name in the request, used in the message (``profile``, ``data``...).
        budget: what it may contain (:data:`DATA` or :data:`PROFILE`).

    Raises:
        RemoteProtocolError: code ``invalid_data``; the message names the element and the rule,
            e.g. ``profile.tags[3]: nested deeper than 32 levels``.

    Cost: one Python step per array or map (at most ``budget.containers`` of them); their
    elements are checked in bulk (``set(map(type, ...))``, ``min``/``max``, ``str.isascii``),
    so a 60 KB message of small scalars costs about what 60 KB of binary does. Only a refused
    container is walked element by element, to name the element in the message. A small
    flat map of ASCII keys and plain scalars (a chat message's data) is accepted in one pass
    first (:func:`_flat`); anything else takes the walk (:func:`walk`).
    """
    small = len(value) <= min(SMALL, budget.items) if type(value) is dict else False
    if small and budget.containers >= 1 and _flat(value):  # type: ignore[arg-type]
        return  # one map, one level deep, within the budget
    walk(value, field, budget)


_FLAT_SCALARS = frozenset({type(None), bool, bytes, bytearray})
"""Scalars :func:`_flat` accepts as they are (its other ones need a look at the value)."""


def _flat(mapping: dict[Any, Any]) -> bool:
    """Whether every key is an ASCII string and every value a scalar accepted at a glance:
    nil, bool, binary, an ASCII string, an int in range or a finite float. False says
    nothing (the walk decides)."""
    for key, v in mapping.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(v)
        if kind is str:
            if not v.isascii():
                return False
        elif kind is float:
            if not math.isfinite(v):
                return False
        elif kind is int:
            if not MIN_INT <= v <= MAX_INT:
                return False
        elif kind not in _FLAT_SCALARS:
            return False
    return True


def walk(value: object, field: str, budget: Budget = DATA) -> None:
    """:func:`check` without its shortcut for small flat maps: the definition the shortcut
    must agree with (tests/unit/test_values.py)."""
    stack: list[tuple[Any, int, _Path]] = [(value, 0, field)]
    containers = items = 0
    while stack:
        item, depth, path = stack.pop()
        if not (isinstance(item, dict | list) or type(item) is tuple):  # (not ExtType)
            rule = _scalar_rule(item)
            if rule is not None:
                raise _refuse(path, rule)
            continue
        _check_container(depth, path)
        containers += 1
        items += len(item)
        if containers > budget.containers or items > budget.items:
            raise _refuse(field, _over(budget, containers > budget.containers))
        deep, count = _visit(item, path)
        if containers + count > budget.containers:  # before visiting any of them
            raise _refuse(field, _over(budget, True))
        if deep:
            stack.extend((c, depth + 1, (path, k)) for k, c in _of_kinds(item, deep))


def _visit(item: Any, path: _Path) -> tuple[set[type], int]:
    """Check one array's or map's keys and scalar elements; return the types of the
    elements to visit one by one, and (for a large one) how many of those are arrays or maps:
    a small one's are counted as they are visited."""
    mapping = isinstance(item, dict)
    if len(item) <= SMALL:  # one by one: cheaper than the bulk checks' set-up
        if mapping:
            for key in item:
                _check_key(item, key, path)
        return set(map(type, item.values() if mapping else item)) - _PLAIN, 0
    if mapping:
        _check_keys(item, path)
    return _check_elements(item, item.values() if mapping else item, path)


def _over(budget: Budget, containers: bool) -> str:
    if containers:
        return f"holds more than {budget.containers} arrays and maps"
    return f"holds more than {budget.items} elements (array elements and map entries)"


_PLAIN = frozenset({type(None), bool, bytes, bytearray})
"""Scalars that are always accepted."""
_CONTAINERS = frozenset({list, tuple, dict})


def _bulk_ok(kind: type, same: Any) -> bool | None:
    """Whether every element of ``same`` (all of type ``kind``) is accepted, checked in bulk;
    None: ``kind`` is checked one by one (arrays, maps, subclasses, refused types)."""
    if kind is int:
        return bool(MIN_INT <= min(same) and max(same) <= MAX_INT)
    if kind is float:
        return all(map(math.isfinite, same))
    if kind is str:
        return all(map(str.isascii, same)) or all(map(is_text, same))
    return None


SMALL = 16
"""Arrays and maps of up to this many elements are checked one element at a time."""


def _check_elements(parent: Any, children: Any, path: _Path) -> tuple[set[type], int]:
    """Check the scalar elements of one array or map in bulk (raising for the first refused
    one); return the types of the elements to visit one by one, and how many of those are
    arrays or maps."""
    kinds = set(map(type, children))
    if kinds <= _PLAIN:
        return set(), 0
    single = len(kinds) == 1
    deep: set[type] = set()
    count = 0
    for kind in kinds - _PLAIN:
        same = children if single else _is(children, kind)
        ok = _bulk_ok(kind, same)
        if ok is None:
            deep.add(kind)
            if kind in _CONTAINERS:
                count += len(same)
        elif not ok:
            entries = parent.items() if isinstance(parent, dict) else enumerate(parent)
            for key, child in entries:
                rule = _scalar_rule(child)
                if rule is not None:
                    raise _refuse((path, key), rule)
    return deep, count


def _is(elements: Any, kind: type) -> list[Any]:
    """The elements whose type is ``kind`` (a comprehension: measured faster than
    ``compress`` over ``map(type, ...)``)."""
    return [e for e in elements if type(e) is kind]


def _of_kinds(item: Any, kinds: set[type]) -> list[tuple[Any, Any]]:
    """``(key or index, element)`` of the elements of ``item`` whose type is in ``kinds``."""
    entries = item.items() if isinstance(item, dict) else enumerate(item)
    return [(k, c) for k, c in entries if type(c) in kinds]


def _check_keys(mapping: dict[Any, Any], path: _Path) -> None:
    """A map's keys, in bulk: strings (ASCII, else valid Unicode) and integers in range, never
    an integer and its decimal string both; anything else is checked key by key."""
    kinds = set(map(type, mapping))
    if not kinds:
        return
    if kinds == {str} and (all(map(str.isascii, mapping)) or all(map(is_text, mapping))):
        return
    if kinds == {int} or kinds == {str, int}:
        ints = _is(mapping, int) if str in kinds else list(mapping)
        strs = _is(mapping, str) if str in kinds else []
        clash = bool(strs) and not set(map(str, ints)).isdisjoint(strs)
        if (
            MIN_INT <= min(ints, default=0)
            and max(ints, default=0) <= MAX_INT
            and not clash
            and (all(map(str.isascii, strs)) or all(map(is_text, strs)))
        ):
            return
    for key in mapping:
        _check_key(mapping, key, path)


def _check_container(depth: int, path: _Path) -> None:
    if depth >= MAX_DEPTH:
        raise _refuse(path, f"arrays and maps may nest at most {MAX_DEPTH} levels deep")


def _scalar_rule(item: object) -> str | None:
    """None if ``item`` is an accepted scalar, else the rule it breaks."""
    if item is None or isinstance(item, bool | bytes | bytearray):
        return None
    if isinstance(item, int):
        return None if MIN_INT <= item <= MAX_INT else "integers must be from -2**63 to 2**64-1"
    if isinstance(item, float):
        return None if math.isfinite(item) else "NaN and Infinity are not allowed (JSON has none)"
    if isinstance(item, str):
        return None if is_text(item) else "strings must be valid Unicode (no lone surrogates)"
    return f"{_kind(item)} is not allowed: use nil, bool, int, float, str, bin, array or map"


def _check_key(mapping: dict[Any, Any], key: Any, path: _Path) -> None:
    if isinstance(key, str):
        if not is_text(key):
            raise _refuse((path, key), "map keys must be valid Unicode (no lone surrogates)")
    elif isinstance(key, int) and not isinstance(key, bool):
        if not MIN_INT <= key <= MAX_INT:
            raise _refuse((path, key), "integer map keys must be from -2**63 to 2**64-1")
        if repr(int(key)) in mapping:  # what json.dumps writes for an integer key
            raise _refuse(
                path, f"keys {int(key)} and '{int(key)}' would be one key in JSON; use one"
            )
    else:
        raise _refuse(path, f"map keys must be strings or integers, not {_kind(key)}")


def _kind(item: object) -> str:
    name = type(item).__name__
    if name == "ExtType":  # msgpack.ExtType: not imported here (codec is the msgpack importer)
        return f"msgpack ext type {getattr(item, 'code', '?')}"
    if name == "Timestamp":
        return "a msgpack timestamp (send milliseconds as an integer)"
    return {"NoneType": "nil", "bytes": "bin", "bytearray": "bin", "float": "a float"}.get(
        name, f"a {name}"
    )


def _refuse(path: _Path, rule: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{_format(path)}: {rule}", code=ErrorCode.INVALID_DATA)


def _format(path: _Path) -> str:
    """``data.user['a b'][3]``: each key shortened, and the whole at most 60 characters."""
    steps: list[str] = []
    while not isinstance(path, str):
        path, key = path
        if isinstance(key, str) and key.isidentifier() and len(key) <= 40:
            steps.append(f".{key}")
        else:
            text = repr(key)
            steps.append(f"[{text[:40]}{'...' if len(text) > 40 else ''}]")
    steps.reverse()
    if len(path) + sum(map(len, steps)) <= 60:
        return path + "".join(steps)
    # Shortened at whole steps, so that "path: rule" fits a WebSocket close reason (123 bytes).
    head, tail = path, ""
    while steps and len(head) + len(steps[0]) <= 30:
        head += steps.pop(0)
    while steps and len(tail) + len(steps[-1]) <= 27:
        tail = steps.pop() + tail
    return f"{head}...{tail}"


def find_key(value: object, field: str, match: Callable[[object], bool]) -> str | None:
    """The path of the first map key for which ``match(key)`` is true, or None.

    For a value :func:`check` accepted (so at most MAX_DEPTH deep); iterative, linear.
    """
    stack: list[tuple[Any, _Path]] = [(value, field)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if match(key):
                    return _format((path, key))
                stack.append((child, (path, key)))
        elif isinstance(item, list) or type(item) is tuple:
            stack.extend((child, (path, i)) for i, child in enumerate(item))
    return None


# -- JSON ---------------------------------------------------------------------------------------


def json_default(item: object) -> str:
    """The JSON form of what JSON lacks: binary becomes its base64 string (RFC 4648, padded)."""
    if isinstance(item, bytes | bytearray):
        return base64.b64encode(item).decode("ascii")
    raise TypeError(f"{type(item).__name__} has no JSON form")


def dumps_json(obj: object) -> bytes:
    """Encode an object holding accepted values as JSON (ASCII; integer keys as strings).

    Raises:
        TypeError, ValueError: ``obj`` holds something :func:`check` refuses (a bug of the caller).
    """
    return json.dumps(obj, default=json_default, allow_nan=False).encode("ascii")
