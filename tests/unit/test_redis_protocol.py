"""The Redis engine's wire to Redis: key layout and envelopes (no Redis needed)."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcore.engines.redis import envelopes as rp
from rtcore.engines.redis.keys import Keys


def hash_tag(key: bytes) -> bytes:
    """What Redis Cluster hashes: the first {...} with something inside."""
    match = re.search(rb"\{([^}]+)\}", key)
    assert match is not None, key
    return match.group(1)


def test_every_key_of_a_channel_is_in_one_cluster_slot() -> None:
    keys = Keys("rt")
    tags = {hash_tag(k) for k in keys.presence("chat", "room:1")}
    assert tags == {b"chat:room:1"}  # the scripts touch one slot
    assert hash_tag(keys.channel_pubsub("chat", "room:1")) == b"chat:room:1"
    assert hash_tag(keys.app_pubsub("chat")) == hash_tag(keys.revoked("chat")) == b"chat"
    # Two rules of one client: one slot, so one script takes from both atomically.
    assert hash_tag(keys.bucket("chat", "u:ann", "a")) == hash_tag(
        keys.bucket("chat", "u:ann", "b")
    )
    # Different prefixes never share a key (two deployments on one Redis).
    assert not set(keys.presence("chat", "x")) & set(Keys("other").presence("chat", "x"))


@given(
    st.one_of(st.none(), st.text(max_size=40)),
    st.dictionaries(st.text(max_size=5), st.binary(max_size=5)),
)
def test_member_blobs_round_trip_binary_profiles_included(
    user: str | None, data: dict[str, bytes]
) -> None:
    info = {"id": "c1", "user": user or None, "data": data}
    assert rp.unpack_member(rp.member_blob(user, info)) == ((user or None), info)


def test_envelopes_decode_to_what_was_packed() -> None:
    env = rp.decode(rp.message("n1", "channel", "room", None, "c2", b"\x82frame"))
    assert (env.kind, env.node, env.fields) == (
        rp.MESSAGE,
        "n1",
        ("channel", "room", None, "c2", b"\x82frame"),
    )
    env = rp.decode(rp.control("n2", "user_event", ["ann", "signout", {"id": "s"}, None, 1.5]))
    assert env.kind == rp.CONTROL and env.fields == (
        "user_event",
        ("ann", "signout", {"id": "s"}, None, 1.5),
    )
    # What a script publishes (Lua's cmsgpack: strings, booleans) decodes with raw strings.
    lua = msgpack.packb(
        ["P", "n3", "member_join", "room", b"\x00\x00\xc0".decode("latin-1"), True, ""],
        use_bin_type=False,
    )
    env = rp.decode(lua)
    assert env.kind == rp.PRESENCE and env.node == "n3" and env.fields[0] == b"member_join"


@given(st.binary(max_size=64))
def test_anything_else_on_the_channel_is_a_bad_envelope_never_another_error(data: bytes) -> None:
    try:
        rp.decode(data)
    except rp.BadEnvelope:
        pass


@pytest.mark.parametrize(
    "data", [b"", b"\x90", msgpack.packb(["X", "n", 1]), msgpack.packb(["M", 5, 1])]
)
def test_malformed_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(rp.BadEnvelope):
        rp.decode(data)


def test_after_an_outage_a_node_tells_its_members_what_changed() -> None:
    from rtcore.engines.redis.presence import listing_diff as _listing_diff

    def m(i: str, user: str | None, data: object = None) -> dict[str, object]:
        return {"id": i, "user": user, "data": data}

    seen = {"a": m("a", "ann"), "b": m("b", "bob"), "c": m("c", "cat", 1), "t": m("t", None)}
    listed = [m("b", "bob"), m("c", "cat", 2), m("d", "ann"), m("e", "eve"), m("f", "eve")]
    events = _listing_diff(seen, listed, touched={"t", "f"})
    assert events == [
        ("member_leave", m("a", "ann"), False),  # ann is still there, on another connection
        ("member_update", m("c", "cat", 2), None),
        ("member_join", m("d", "ann"), True),
        ("member_join", m("e", "eve"), False),  # eve has two connections listed
    ]  # "t" and "f" were changed by events since the listing was asked for: left alone
