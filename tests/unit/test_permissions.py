"""The permission decision (rtcore.core.permissions): every rule value x every token state,
grants compiled from a claim, user-limited channel names (sans-IO)."""

from __future__ import annotations

import attrs
import pytest

from rtcore.core.permissions import (
    ASK_HOOK,
    HOOK,
    HOOK_OPERATIONS,
    MAX_GRANT_PATTERNS,
    MAX_LISTED_USERS,
    NO_GRANTS,
    OPERATIONS,
    REFUSAL_REASONS,
    RULE_VALUES,
    ChannelToken,
    GrantsError,
    Refusal,
    Subject,
    check_listed,
    decide,
    listed_users,
    parse_grants,
)
from rtcore.protocol import ErrorCode

CH = "room:42"
GRANT_ALL = parse_grants({CH: list(OPERATIONS)})
GRANT_JOIN_ELSEWHERE = parse_grants({"room:43": list(OPERATIONS), "feed:*": ["join"]})
TOKEN_ALL = ChannelToken(CH, 0.0, frozenset(OPERATIONS))
TOKEN_NONE = ChannelToken(CH, 0.0, frozenset())

STATES: dict[str, Subject] = {
    "anonymous": Subject(None),
    "signed_in": Subject("alice"),
    "granted": Subject("alice", GRANT_ALL),
    "granted_elsewhere": Subject("alice", GRANT_JOIN_ELSEWHERE),
    "token": Subject("alice", NO_GRANTS, TOKEN_ALL),
    "token_without_ops": Subject("alice", NO_GRANTS, TOKEN_NONE),
    "anonymous_token": Subject(None, NO_GRANTS, TOKEN_ALL),
}

ALLOWED: dict[str, set[str]] = {
    "anyone": set(STATES),
    "signed_in": {"signed_in", "granted", "granted_elsewhere", "token", "token_without_ops"},
    "nobody": set(),
    "granted": {"granted"},
    "token": {"token", "anonymous_token"},
}
"""For each rule value, the token states it admits (whatever the operation)."""

REASON = {
    "signed_in": "signed_in",
    "nobody": "nobody",
    "granted": "not_granted",
}


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("value", RULE_VALUES)
def test_each_rule_value_and_token_state(value: str, state: str, op: str) -> None:
    refusal = decide(value, op, CH, STATES[state])
    if state in ALLOWED[value]:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.code is ErrorCode.FORBIDDEN
    if value == "token":
        assert refusal.reason == ("token_ops" if state == "token_without_ops" else "no_token")
    else:
        assert refusal.reason == REASON[value]
    assert CH in refusal.message


def test_every_rule_value_is_in_the_table() -> None:
    assert set(ALLOWED) == set(RULE_VALUES)


def test_a_token_allows_only_its_ops() -> None:
    who = Subject("alice", NO_GRANTS, ChannelToken(CH, 0.0, frozenset({"join", "presence"})))
    assert decide("token", "join", CH, who) is None
    assert decide("token", "presence", CH, who) is None
    send = decide("token", "send", CH, who)
    assert send is not None and send.reason == "token_ops"
    assert "does not allow 'send'" in send.message


def test_grants_add_up_over_every_matching_pattern() -> None:
    grants = parse_grants(
        {
            "room:42": ["send"],
            "room:*": ["join"],
            "r??m:4*": ["presence"],
            "*:42": ["history"],
            "other": ["join", "send"],
        }
    )
    assert grants.ops("room:42") == frozenset(OPERATIONS)
    assert grants.ops("room:7") == frozenset({"join"})
    assert grants.ops("roam:41") == frozenset({"presence"})
    assert grants.ops("feed:42") == frozenset({"history"})
    assert grants.ops("room") == frozenset()
    assert grants.ops("other") == frozenset({"join", "send"})
    assert grants.ops("otherx") == frozenset()
    assert grants.ops("room:42") == frozenset(OPERATIONS)  # cached: the same answer


def test_a_glob_star_spans_separators_and_question_mark_one_character() -> None:
    grants = parse_grants({"a*z": ["join"], "b?": ["join"]})
    assert grants.allows("a:b/c#d,e-z", "join")
    assert grants.allows("b1", "join") and not grants.allows("b12", "join")


def test_256_patterns_match_like_one_pattern_each() -> None:
    claim = {f"room:{i}": ["join"] for i in range(200)}
    claim.update({f"feed:{i}:*": ["join", "history"] for i in range(40)})
    claim.update({f"doc:{i}:*:v?": ["send"] for i in range(16)})
    grants = parse_grants(claim)
    assert grants.count == 256
    assert grants.ops("room:199") == frozenset({"join"})
    assert grants.ops("feed:39:x") == frozenset({"join", "history"})
    assert grants.ops("doc:15:abc:v1") == frozenset({"send"})
    assert grants.ops("doc:15:abc:v12") == frozenset()
    assert grants.ops("room:200") == frozenset()


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (["room:1"], "must be a map"),
        ("room:1", "must be a map"),
        ({"room:1": "join"}, "must list operations"),
        ({"room:1": ["join", "publish"]}, "must list operations"),
        ({"room 1": ["join"]}, "must be 1-128 characters"),
        ({"": ["join"]}, "must be 1-128 characters"),
        ({"x" * 129: ["join"]}, "must be 1-128 characters"),
        ({f"c{i}": ["join"] for i in range(MAX_GRANT_PATTERNS + 1)}, "at most 1024"),
    ],
)
def test_a_grants_claim_of_the_wrong_shape_is_refused(claim: object, message: str) -> None:
    with pytest.raises(GrantsError, match=message):
        parse_grants(claim)


def test_the_bounds_themselves_are_accepted() -> None:
    grants = parse_grants({f"c{i}": ["join"] for i in range(MAX_GRANT_PATTERNS)})
    assert grants.count == MAX_GRANT_PATTERNS
    assert parse_grants({"x" * 128: []}).ops("x" * 128) == frozenset()
    assert parse_grants(None) is NO_GRANTS


def test_user_limited_names_list_their_users() -> None:
    assert listed_users("dm#alice,bob") == ("alice", "bob")
    assert listed_users("a#b#carol") == ("carol",)  # after the last '#'
    assert listed_users("dm") is None
    assert listed_users("dm#") is None
    assert listed_users("dm#alice,,bob") is None
    many = ",".join(f"u{i}" for i in range(MAX_LISTED_USERS))
    assert listed_users(f"dm#{many}") is not None
    assert listed_users(f"dm#{many},one_more") is None


def test_only_listed_users_pass_a_user_limited_channel() -> None:
    assert check_listed("join", "dm#alice,bob", "alice") is None
    assert check_listed("send", "dm#alice,bob", "bob") is None
    carol = check_listed("join", "dm#alice,bob", "carol")
    assert carol is not None and carol.code is ErrorCode.FORBIDDEN
    assert carol.reason == "user_limited"
    anonymous = check_listed("history", "dm#alice,bob", None)
    assert anonymous is not None and anonymous.code is ErrorCode.FORBIDDEN
    bad = check_listed("join", "dm#" + ",".join(["u"] * (MAX_LISTED_USERS + 1)), "u")
    assert bad is not None and bad.code is ErrorCode.INVALID_CHANNEL
    assert "1-16 comma-separated user ids" in bad.message


@pytest.mark.parametrize("state", sorted(STATES))
def test_hook_asks_the_app_for_joins_and_sends_and_admits_members_to_the_rest(
    state: str,
) -> None:
    """``hook``: join and send are the app's hook's to decide (whoever asks); presence and
    history (following ``join = "hook"``) are for the channel's members only."""
    who = STATES[state]
    for op in HOOK_OPERATIONS:
        assert decide(HOOK, op, CH, who) is ASK_HOOK
    member = attrs.evolve(who, member=True)
    for op in ("presence", "history"):
        assert decide(HOOK, op, CH, member) is None
        refusal = decide(HOOK, op, CH, who)
        assert isinstance(refusal, Refusal) and refusal.code is ErrorCode.FORBIDDEN
        assert refusal.reason == "not_member" and refusal.reason in REFUSAL_REASONS
        assert "is for the channel's members" in refusal.message and CH in refusal.message
