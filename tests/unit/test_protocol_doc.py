"""protocol.md is true: its examples decode to what it says, its code tables match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rtcore.protocol import CloseCode, ErrorCode, codec
from tests.helpers import unframe

DOC = (Path(__file__).resolve().parents[2] / "protocol.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```(frame|wsframe)\n(.*?)\n\n(.*?)\n```", re.S)
EXAMPLES = BLOCK.findall(DOC)
ALL_TYPES = codec.CLIENT_TYPES | codec.SERVER_TYPES


def test_the_doc_has_an_example_of_every_frame_type() -> None:
    shown = {json.loads(value).get("t") for kind, _, value in EXAMPLES if kind == "frame"}
    assert shown == ALL_TYPES


@pytest.mark.parametrize(
    ("kind", "hexdump", "value"), EXAMPLES, ids=[v[:40] for _, _, v in EXAMPLES]
)
def test_each_example_decodes_to_its_stated_value(kind: str, hexdump: str, value: str) -> None:
    data = bytes.fromhex(hexdump.replace("\n", " "))
    expected: dict[str, Any] = json.loads(value)
    if kind == "wsframe":
        ((opcode, payload),) = unframe(data)
        if "close" in expected:
            assert payload == (expected["close"], expected["reason"])
            return
        data = bytes(payload)
    assert msgpack.unpackb(data) == expected
    frame = codec.decode(data, allowed=ALL_TYPES)
    assert codec.to_wire(frame) == expected  # canonical: the codec writes exactly these bytes
    assert codec.encode(frame) == data


def _table_first_column(heading: str) -> list[str]:
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `?([a-z_0-9]+)`? \|", section, re.M)
    return [r for r in rows if r != "code"]  # the header row


def test_error_code_table_matches_the_code() -> None:
    assert _table_first_column("## 6. Error codes") == [c.value for c in ErrorCode]


def test_close_code_table_matches_the_code() -> None:
    documented = {int(c) for c in _table_first_column("## 7. Close codes")}
    assert {int(c) for c in CloseCode} <= documented
    assert documented - {int(c) for c in CloseCode} == {1002}  # sent by wsproto on bad frames
