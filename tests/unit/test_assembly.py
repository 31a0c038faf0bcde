"""Message assembly (rtcore.protocol.assembly), shared by the server and the client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.protocol import CloseCode, RemoteProtocolError, assembly
from rtcore.protocol.assembly import MessageAssembler, MessageTooBig


def feed(assembler: MessageAssembler, parts: list[bytes], limit: int) -> list[bytes | None]:
    return [assembler.add(p, i == len(parts) - 1, limit) for i, p in enumerate(parts)]


def test_a_message_in_one_piece_is_returned_as_it_came() -> None:
    data = b"hello"
    assert MessageAssembler().add(data, True, 100) is data


def test_fragments_are_joined_in_order_and_only_the_last_returns_the_message() -> None:
    a = MessageAssembler()
    assert feed(a, [b"ab", b"", b"cd", b"e"], 100) == [None, None, None, b"abcde"]
    # the next message starts afresh, in one piece or in several
    assert a.add(b"xyz", True, 100) == b"xyz"
    assert feed(a, [b"1", b"2"], 100) == [None, b"12"]


@given(st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=6), max_size=6))
def test_any_sequence_of_fragmented_messages_comes_out_whole(messages: list[list[bytes]]) -> None:
    a = MessageAssembler()
    for parts in messages:
        assert feed(a, parts, 10_000)[-1] == b"".join(parts)


def test_the_limit_is_the_whole_message_exactly_at_the_boundary() -> None:
    assert MessageAssembler().add(b"x" * 10, True, 10) == b"x" * 10
    with pytest.raises(MessageTooBig):
        MessageAssembler().add(b"x" * 11, True, 10)
    a = MessageAssembler()
    assert feed(a, [b"xxxx", b"xxxx", b"xx"], 10) == [None, None, b"x" * 10]
    a.add(b"xxxx", False, 10)
    a.add(b"xxxx", False, 10)
    with pytest.raises(MessageTooBig) as caught:
        a.add(b"xxx", True, 10)  # each fragment is small; the message is 11
    assert caught.value.limit == 10


def test_a_message_in_one_piece_needs_no_assembler_and_has_the_same_limit() -> None:
    data = b"x" * 10
    assert assembly.whole(data, 10) is data
    assert assembly.assemble(None, data, True, 10) == (None, data)
    with pytest.raises(MessageTooBig) as caught:
        assembly.assemble(None, b"x" * 11, True, 10)
    assert caught.value.limit == 10 and caught.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_an_assembler_is_held_only_while_a_message_comes_in_fragments() -> None:
    held, message = assembly.assemble(None, b"ab", False, 10)
    assert isinstance(held, MessageAssembler) and message is None
    again, message = assembly.assemble(held, b"cd", False, 10)
    assert again is held and message is None
    assert assembly.assemble(held, b"e", True, 10) == (None, b"abcde")
    with pytest.raises(MessageTooBig):
        assembly.assemble(assembly.assemble(None, b"x" * 6, False, 10)[0], b"x" * 5, True, 10)


def test_a_completed_message_does_not_count_against_the_next() -> None:
    a = MessageAssembler()
    assert feed(a, [b"x" * 6, b"x" * 4], 10)[-1] == b"x" * 10
    assert a.add(b"y" * 10, True, 10) == b"y" * 10
    assert feed(a, [b"z" * 5, b"z" * 5], 10)[-1] == b"z" * 10


def test_too_big_is_a_remote_protocol_error_closing_with_1009() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        MessageAssembler().add(b"x" * 65, True, 64)
    assert caught.value.close_code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert caught.value.message == "message exceeds 64 bytes"  # the server's close reason


def test_text_is_assembled_to_str_and_counted_in_characters() -> None:
    a = MessageAssembler()
    assert a.add("héllo", True, 5) == "héllo"  # 5 characters (6 UTF-8 bytes)
    assert a.add("hé", False, 5) is None
    assert a.add("llo", True, 5) == "héllo"
    with pytest.raises(MessageTooBig):
        a.add("héllo!", True, 5)


def test_binary_stays_bytes() -> None:
    a = MessageAssembler()
    a.add(b"ab", False, 100)
    message = a.add(b"cd", True, 100)
    assert type(message) is bytes and message == b"abcd"


def test_the_assembler_is_sans_io() -> None:
    tree = ast.parse(Path(assembly.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "typing", "rtcore.protocol.codes", "rtcore.protocol.errors"}
