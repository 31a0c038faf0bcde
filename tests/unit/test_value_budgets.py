"""What a value may contain bounds what it costs (protocol.md §4.3.1; issue 20, findings 2
and 3): a 60 KB message of 60,000 empty arrays cost ~150 ms of CPU to check and ~3.5 MB once
decoded; a 4 KiB profile of 4,000 empty arrays cost 254 KiB per connection."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rtcore.core.session.session import Session
from rtcore.protocol import ErrorCode, RemoteProtocolError, values
from rtcore.protocol.close import Close
from rtcore.protocol.codes import CloseCode
from tests.unit.test_session import MONO, NOW, World, err, ok, take


def refusal(value: Any, budget: values.Budget = values.DATA) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        values.check(value, "data", budget)
    assert caught.value.code == ErrorCode.INVALID_DATA
    return caught.value.message


def test_a_message_of_many_empty_arrays_is_refused() -> None:
    assert refusal([[] for _ in range(60_000)]) == "data: holds more than 1024 arrays and maps"
    assert refusal({"a": [{} for _ in range(1025)]}) == "data: holds more than 1024 arrays and maps"
    spread = [[[] for _ in range(10)] for _ in range(100)]  # 1,101 containers, none large
    assert refusal(spread) == "data: holds more than 1024 arrays and maps"
    values.check([[] for _ in range(1023)], "data")  # 1,024 with the outer one: accepted


def test_the_item_budget_counts_every_level() -> None:
    small = values.Budget(containers=10, items=5)
    values.check([1, 2, [3, 4]], "data", small)  # 3 + 2 items
    assert refusal([1, 2, [3, 4, 5]], small) == (
        "data: holds more than 5 elements (array elements and map entries)"
    )
    assert refusal({"a": 1, "b": {"c": 2, "d": 3, "e": 4, "f": 5}}, small).endswith("entries)")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0] * 500 + [float("nan")] + [2.0] * 10, "data[500]: NaN and Infinity"),
        (list(range(40)) + [2**64], "data[40]: integers must be from -2**63 to 2**64-1"),
        (["a"] * 30 + ["\ud800"], "data[30]: strings must be valid Unicode"),
        ([None] * 20 + [{1, 2}], "data[20]: a set is not allowed"),
        ({**{f"k{i}": i for i in range(20)}, b"x": 1}, "map keys must be strings or integers"),
        ({**{i: i for i in range(20)}, "3": 0}, "keys 3 and '3' would be one key in JSON"),
        ({**{f"k{i}": 0 for i in range(20)}, "\udc00": 1}, "map keys must be valid Unicode"),
        ([[0] * 20, [1.5] * 19 + [float("inf")]], "data[1][19]: NaN and Infinity"),
    ],
)
def test_bulk_checks_still_name_the_element(value: Any, message: str) -> None:
    assert message in refusal(value)


def test_large_accepted_values_stay_accepted() -> None:
    values.check(list(range(60_000)), "data")
    values.check({str(i): [i, "x", 1.5, None, b"b", True] for i in range(1000)}, "data")
    values.check({i: "é" * 3 for i in range(100)}, "data")


def test_a_profile_of_many_empty_arrays_is_refused_in_hello_and_profile() -> None:
    world = World()
    cheap = [[] for _ in range(4000)]  # 4,003 bytes: within max_profile_bytes
    s = Session("x", world.apps, world.config, world.pending)
    close = s.receive(msgpack.packb({"t": "hello", "v": 1, "profile": cheap}), MONO, NOW)
    assert isinstance(close, Close) and close.code == CloseCode.HELLO_EXPECTED
    assert close.reason == (
        "hello: profile: holds more than 256 elements (array elements and map entries)"
    )
    member = world.session()
    reply = err(member, ErrorCode.INVALID_DATA, t="profile", id=1, data=[[] for _ in range(40)])
    assert reply.message == "data: holds more than 32 arrays and maps"
    many = list(range(257))
    assert (
        "holds more than 256 elements"
        in err(member, ErrorCode.INVALID_DATA, t="profile", id=2, data=many).message
    )
    assert ok(member, t="profile", id=3, data={"name": "ann", "tags": ["a", "b"]}) == {
        "channels": 0
    }
    take(member)
