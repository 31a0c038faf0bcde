"""The value rules (protocol.md §4.3.1): what intake accepts, every output path can encode.

Properties: a value the check accepts packs as msgpack and round-trips exactly (arrays as
lists), and encodes as the server API's JSON and reads back as documented (bin as base64, int
keys as decimal strings); the check agrees with a plain model of the rules on arbitrary,
hostile values; it refuses only with ``invalid_data`` and never raises anything else.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcore.protocol import ErrorCode, RemoteProtocolError, codec, values

INT = st.integers(values.MIN_INT, values.MAX_INT)


def nest(depth: int, leaf: Any = 0) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def valid_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        INT,
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),  # hypothesis text has no surrogates
        st.binary(max_size=10),
    )
    keys = st.one_of(st.text(max_size=6), INT)

    def json_safe_map(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.dictionaries(keys, children, max_size=4).filter(
            lambda d: (
                not any(isinstance(k, int) and str(k) in d for k in d)
            )  # `1` and `"1"` together are refused
        )

    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=4), json_safe_map(children)),
        max_leaves=max_leaves,
    )


def deep(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values wrapped in up to 40 more levels of arrays or single-key maps."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        value = draw(strategy)
        for wrap in draw(st.lists(st.sampled_from(["list", "map", "tuple"]), max_size=40)):
            value = {"k": value} if wrap == "map" else [value] if wrap == "list" else (value,)
        return value

    return build()


def as_msgpack(value: Any) -> Any:
    """What msgpack gives back: tuples become lists, bytearray bytes."""
    if isinstance(value, dict):
        return {k: as_msgpack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_msgpack(v) for v in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def as_json(value: Any) -> Any:
    """The documented JSON form: bin -> base64 string, int keys -> decimal strings."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) else k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value


def model_accepts(value: Any, depth: int = 0) -> bool:
    """The rules of protocol.md §4.3.1, written as plainly as possible (recursive: only for
    values the strategies build, at most a few dozen levels deep)."""
    if isinstance(value, dict) or type(value) in (list, tuple):
        if depth >= 32:
            return False
        if isinstance(value, dict):
            for k in value:
                if isinstance(k, bool) or not isinstance(k, str | int):
                    return False
                if isinstance(k, int) and not values.MIN_INT <= k <= values.MAX_INT:
                    return False
                if isinstance(k, int) and str(k) in value:
                    return False
                if isinstance(k, str) and not _utf8(k):
                    return False
            return all(model_accepts(v, depth + 1) for v in value.values())
        return all(model_accepts(v, depth + 1) for v in value)
    if value is None or isinstance(value, bool | bytes | bytearray):
        return True
    if isinstance(value, int):
        return values.MIN_INT <= value <= values.MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return _utf8(value)
    return False


def _utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def accepted(value: Any, budget: values.Budget = values.DATA) -> bool:
    try:
        values.check(value, "data", budget)
    except RemoteProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_DATA and exc.close_code is None
        assert exc.message.startswith("data")
        return False
    return True


def accepted_profile(value: Any) -> bool:
    """Accepted as a profile: within the smaller budget of profiles (protocol.md §4.3.1)."""
    return accepted(value, values.PROFILE)


@given(deep(valid_values()))
def test_an_accepted_value_encodes_on_every_output_path_and_round_trips_as_documented(
    value: Any,
) -> None:
    assert model_accepts(value) is accepted(value)
    if not accepted(value):  # deeper than 32 levels: the wrapping went too far
        return
    frame = {"t": "ok", "id": 1, "data": {"members": [{"id": "x", "user": None, "data": value}]}}
    packed = codec.pack(frame)
    assert codec.unpack(packed)["data"]["members"][0]["data"] == as_msgpack(value)
    assert json.loads(values.dumps_json(frame))["data"]["members"][0]["data"] == as_json(value)


hostile_scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included
    st.text(max_size=4),
    st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates
    st.binary(max_size=4),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=3)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)),
    st.none(),
    st.booleans(),
    st.just(object()),
    st.frozensets(st.integers(), max_size=2),
)
hostile_keys = st.one_of(
    st.text(max_size=3),
    st.sampled_from(["\ud800", "k\udc00"]),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=3),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.tuples(st.integers()),
)
hostile_values = deep(
    st.recursive(
        hostile_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children),
            st.dictionaries(hostile_keys, children, max_size=3),
        ),
        max_leaves=20,
    )
)


@given(hostile_values)
def test_the_check_agrees_with_the_rules_on_hostile_values(value: Any) -> None:
    assert accepted(value) is model_accepts(value)
    if accepted(value):
        codec.pack(value)
        values.dumps_json(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({b"k": 1}, "data: map keys must be strings or integers, not bin"),
        ({True: 1}, "data: map keys must be strings or integers, not a bool"),
        ({None: 1}, "data: map keys must be strings or integers, not nil"),
        ({1.5: 1}, "data: map keys must be strings or integers, not a float"),
        ({2**64: 1}, "data[18446744073709551616]: integer map keys must be from"),
        ({"\ud800": 1}, "data['\\ud800']: map keys must be valid Unicode"),
        ({1: "a", "1": "b"}, "data: keys 1 and '1' would be one key in JSON"),
        ([2**64], "data[0]: integers must be from -2**63 to 2**64-1"),
        ([-(2**63) - 1], "data[0]: integers must be from -2**63 to 2**64-1"),
        (int("9" * 4000), "data: integers must be from"),
        ({"x": float("nan")}, "data.x: NaN and Infinity are not allowed"),
        ({"x": [float("-inf")]}, "data.x[0]: NaN and Infinity are not allowed"),
        ("a\udfffb", "data: strings must be valid Unicode"),
        ({"e": msgpack.ExtType(5, b"")}, "data.e: msgpack ext type 5 is not allowed"),
        ({"at": msgpack.Timestamp(1)}, "data.at: a msgpack timestamp (send milliseconds"),
        ({"s": {1, 2}}, "data.s: a set is not allowed"),
        (nest(33), "data[0][0][0][0][0][0][0][0]...[0][0][0][0][0][0][0][0][0]: arrays and"),
        (
            {"a b": {"k": nest(40)}},
            "data['a b'].k[0][0][0][0][0]...[0][0][0][0][0][0][0][0][0]: arrays",
        ),
    ],
)
def test_each_rule_is_refused_with_invalid_data_naming_the_element(
    value: Any, message: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        values.check(value, "data")
    assert info.value.code is ErrorCode.INVALID_DATA
    assert info.value.message.startswith(message), info.value.message


def test_the_nesting_limit_is_32_levels_counting_the_outermost() -> None:
    values.check(nest(30, {"k": []}), "data")  # 32 containers: fine
    values.check(nest(32), "data")  # 32 arrays around a scalar
    with pytest.raises(RemoteProtocolError):
        values.check(nest(32, []), "data")  # the 33rd level, even empty
    with pytest.raises(RemoteProtocolError):
        values.check(nest(30, {"k": [[]]}), "data")


def test_hostile_shapes_are_refused_without_recursion() -> None:
    """Nothing the check does recurses: a million levels, a cycle, a wide-and-deep value."""
    with pytest.raises(RemoteProtocolError):
        values.check(nest(1_000_000), "data")
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(RemoteProtocolError):
        values.check(cycle, "data")
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(RemoteProtocolError):
        values.check(loop, "profile")
    values.check([list(range(1000)) for _ in range(100)], "data")  # wide is fine


def test_json_writes_bin_as_padded_base64_and_int_keys_as_strings() -> None:
    assert json.loads(values.dumps_json({"b": b"\x00\xff", 7: bytearray(b"a")})) == {
        "b": "AP8=",
        "7": "YQ==",
    }
    with pytest.raises(TypeError):  # what the check refuses has no JSON form: never str()ed
        values.dumps_json({"x": object()})
    with pytest.raises(ValueError):
        values.dumps_json({"x": float("nan")})


def test_find_key_names_the_first_matching_key_at_any_depth() -> None:
    value = {"a": [{"b": 1}, {"Password": 2}], "c": 3}
    assert values.find_key(value, "data", lambda k: k == "Password") == "data.a[1].Password"
    assert values.find_key(value, "data", lambda k: k == "nope") is None


flat_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**65)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", "é", "x" * 12])
    | st.binary(max_size=4)
    | st.builds(bytearray, st.binary(max_size=4))
    | st.builds(object)
    | st.just(msgpack.ExtType(1, b"x"))
)
flat_maps = st.dictionaries(
    st.text(max_size=4) | st.sampled_from(["\udc00", "ключ"]) | st.integers(-3, 3) | st.booleans(),
    flat_scalars,
    max_size=18,
)


def _verdict(check: Any, value: Any, budget: values.Budget) -> str | None:
    try:
        check(value, "data", budget)
    except RemoteProtocolError as exc:
        return exc.message
    return None


nearly_flat_maps = st.dictionaries(  # ASCII keys: the shortcut's own ground
    st.text("abc", max_size=3),
    st.floats() | st.integers(-(2**64), 2**65) | st.text("ab", max_size=3),
    max_size=18,
)


@settings(max_examples=300)
@given(
    flat_maps
    | nearly_flat_maps
    | st.dictionaries(st.text("abc", max_size=3), st.text("aé\ud800", max_size=3), max_size=18),
    st.sampled_from([values.DATA, values.PROFILE, values.Budget(1, 3)]),
)
def test_the_flat_map_shortcut_agrees_with_the_walk(value: Any, budget: values.Budget) -> None:
    # check() accepts a small flat map of ASCII keys and plain scalars in one pass (a chat
    # message's data); whatever it accepts or refuses, and why, must be the walk's verdict
    assert _verdict(values.check, value, budget) == _verdict(values.walk, value, budget)
