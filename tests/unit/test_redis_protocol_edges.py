"""The Redis engine's sans-IO parts, exactly (issue 20's mutation run): the key names that
docs/scaling.md documents and the Lua scripts use by position, the scripts as their parts,
and the envelopes' edges (too short, raw strings, a msg's head)."""

from __future__ import annotations

import msgpack
import pytest

from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis import scripts
from rtcore.engines.redis.keys import Keys

KEYS = Keys("rt")


def test_the_key_layout_is_the_documented_one() -> None:
    assert KEYS.channel_tag("chat", "room") == "rt:{chat:room}"
    assert KEYS.channel_pubsub("chat", "room") == b"rt:{chat:room}"
    assert KEYS.presence("chat", "room") == [  # the presence scripts' KEYS, in order
        b"rt:{chat:room}:m",
        b"rt:{chat:room}:o",
        b"rt:{chat:room}:u",
        b"rt:{chat:room}:n",
        b"rt:{chat:room}:seq",
        b"rt:{chat:room}",
    ]
    assert KEYS.history("chat", "room") == [
        b"rt:{chat:room}:h",
        b"rt:{chat:room}:hm",
        b"rt:{chat:room}",
    ]
    assert KEYS.app_pubsub("chat") == b"rt:{chat}"
    assert KEYS.revoked("chat") == b"rt:{chat}:revoked"
    assert KEYS.bucket("chat", "u:ann", "per-second") == b"rt:{chat:rl:u:ann}:per-second"


@pytest.mark.parametrize("name", sorted(scripts.PARTS))
def test_a_script_is_its_parts_in_order(name: str) -> None:
    source = scripts.source(name)
    parts = [scripts.part(p) for p in scripts.PARTS[name]]
    assert all(parts) and source == "".join(parts)
    assert parts[-1].strip() in source and source.endswith(parts[-1])


def test_an_unknown_script_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        scripts.source("NOPE")


@pytest.mark.parametrize("kind", ["M", "P", "C", "H"])
def test_an_envelope_of_two_items_is_refused(kind: str) -> None:
    with pytest.raises(rp.BadEnvelope, match="not an envelope"):
        rp.decode(msgpack.packb([kind, "n1"]))


def test_a_three_item_envelope_is_the_shortest_accepted() -> None:
    env = rp.decode(msgpack.packb(["C", "n1", "op"]))
    assert (env.kind, env.node, env.fields) == (rp.CONTROL, "n1", ("op",))


def test_history_envelopes_decode_with_raw_strings_and_a_text_node() -> None:
    data = msgpack.packb(["H", "n1", "channel", "feed", "", "", 7, "ep", b"\x82frame"])
    env = rp.decode(data)
    assert env.kind == rp.HISTORY and env.node == "n1"
    assert env.fields == (b"channel", b"feed", b"", b"", 7, b"ep", b"\x82frame")


def test_raw_text_fields() -> None:
    assert rp.text(None) is None and rp.text(b"") is None
    assert rp.text(b"ann") == "ann" and rp.text("é".encode()) == "é"


def test_a_msg_head_counts_the_two_fields_the_script_appends() -> None:
    wire = {"t": "msg", "ch": "feed", "ev": "e", "data": 1}
    head = rp.msg_head(wire)
    full = head + msgpack.packb("offset") + msgpack.packb(3) + msgpack.packb("epoch")
    full += msgpack.packb("e1")
    assert msgpack.unpackb(full) == {**wire, "offset": 3, "epoch": "e1"}
    assert head[0] == 0x80 | 6 and head[1:] == msgpack.packb(wire)[1:]


def test_a_msg_head_of_13_fields_is_the_most_a_fixmap_takes() -> None:
    assert rp.msg_head({f"k{i}": i for i in range(13)})[0] == 0x80 | 15
    with pytest.raises(ValueError, match="more than 13"):
        rp.msg_head({f"k{i}": i for i in range(14)})


def test_a_member_blob_of_an_anonymous_member_and_a_too_long_user() -> None:
    blob = rp.member_blob(None, {"id": "c1"})
    assert blob[:2] == b"\x00\x00" and rp.unpack_member(blob) == (None, {"id": "c1"})
    assert rp.member_blob("x" * 0xFFFF, {})[:2] == b"\xff\xff"
    with pytest.raises(ValueError, match="65,535"):
        rp.member_blob("x" * 0x10000, {})


def test_refusals_name_what_was_refused() -> None:
    long = msgpack.packb(["X", "n1", "x" * 60])
    with pytest.raises(rp.BadEnvelope) as refused:
        rp.decode(long)
    assert str(refused.value) == f"not an envelope: {long[:40]!r}"
    short = msgpack.packb(["M", "n1"])
    with pytest.raises(rp.BadEnvelope) as refused:
        rp.decode(short)
    assert str(refused.value) == f"not an envelope: {short!r}"
    with pytest.raises(rp.BadEnvelope) as refused:
        rp.decode(b"\xc1")
    assert str(refused.value).startswith("undecodable envelope: ")
    with pytest.raises(ValueError) as too_long:
        rp.member_blob("x" * 0x10000, {})
    assert str(too_long.value) == "a user id longer than 65,535 bytes"
    with pytest.raises(ValueError) as too_many:
        rp.msg_head({f"k{i}": i for i in range(14)})
    assert str(too_many.value) == "a msg map of more than 13 fields"


def test_a_long_two_item_envelope_is_named_by_its_first_40_bytes() -> None:
    data = msgpack.packb(["M", "n" * 60])
    with pytest.raises(rp.BadEnvelope) as refused:
        rp.decode(data)
    assert str(refused.value) == f"not an envelope: {data[:40]!r}"
