"""Presence has a budget (issue 20, finding 8): joins and profile updates take a token of a
per-connection bucket by default, refused with ``rate_limited`` (limiter ``presence``) like
any limiter's refusal; leaves are never refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rtcore import config as cfg
from rtcore.config import AppConfig
from rtcore.core.limits.limiter import Rule
from rtcore.core.session.session import Session
from rtcore.protocol import ErrorCode
from rtcore.protocol import frames as f
from tests.unit.test_session import MONO, NOW, World, take


def reply(s: Session, now: float, **obj: Any) -> Any:
    assert s.receive(msgpack.packb(obj), now, NOW) is None
    return take(s)[-1]


def test_joins_and_profile_updates_are_limited_per_connection_by_default() -> None:
    world = World()
    s, other = world.session(), world.session()
    for i in range(128):  # the default burst: max_channels, rejoined at once
        assert isinstance(reply(s, MONO, t="join", id=i, ch=f"c{i}"), f.Ok)
    refused = reply(s, MONO, t="profile", id=99, data={"n": 1})
    assert isinstance(refused, f.Err) and refused.code == ErrorCode.RATE_LIMITED.value
    assert (refused.limiter, refused.retry_after) == ("presence", 100)  # 10 a second
    assert isinstance(reply(s, MONO, t="leave", id=100, ch="c0"), f.Ok)  # never refused
    assert isinstance(reply(s, MONO, t="send", id=101, ch="c1", ev="e"), f.Ok)  # not presence
    assert isinstance(reply(other, MONO, t="join", id=1, ch="c1"), f.Ok)  # its own bucket
    assert isinstance(reply(s, MONO + 0.1, t="join", id=102, ch="c0"), f.Ok)  # refilled
    assert isinstance(reply(s, MONO + 0.1, t="join", id=103, ch="x"), f.Err)


def test_a_presence_refusal_charges_the_apps_limiters_nothing_and_counts_in_the_row() -> None:
    rule = Rule("joins", 1000, 1, burst=40, operations=frozenset({"join"}))
    app = AppConfig("default", rate_limits=(rule,), presence_burst=2, refusals_before_disconnect=2)
    world = World(apps=(app,))
    s = world.session()
    assert isinstance(reply(s, MONO, t="join", id=1, ch="a"), f.Ok)
    assert isinstance(reply(s, MONO, t="join", id=2, ch="b"), f.Ok)
    for i in range(2):
        assert reply(s, MONO, t="join", id=3 + i, ch="c").limiter == "presence"
    close = s.receive(msgpack.packb({"t": "join", "id": 9, "ch": "c"}), MONO, NOW)
    assert close is not None and close.code == 4030  # the third refusal in a row
    chain = world.apps["default"].limiter
    assert chain.check("join", "ip:10.0.0.1", s.conn_id, MONO, take=False) is None
    bucket = next(iter(chain._buckets.values()))
    assert bucket.tokens == 38  # two admitted joins, none of the refused


def test_presence_rate_zero_turns_the_limit_off() -> None:
    world = World(apps=(AppConfig("default", presence_rate=0.0),))
    s = world.session()
    for i in range(100):
        assert isinstance(reply(s, MONO, t="join", id=i, ch=f"c{i}"), f.Ok)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"presence_rate": -1}, "presence_rate: must be a positive number"),
        ({"presence_rate": 1e-9}, "presence_rate: must be 0 \\(no limit\\) or at least one a day"),
        ({"presence_rate": 10**30}, "presence_rate: must be at most 1000000000"),
        ({"presence_burst": 0}, "presence_burst: must be a positive integer"),
        ({"presence_burst": 10**400}, "presence_burst: must be at most 1000000000"),
    ],
)
def test_presence_settings_are_checked(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.from_dict({"apps": [{"name": "a", **raw}]})
    conf = cfg.from_dict({"apps": [{"name": "a", "presence_rate": 2, "presence_burst": 5}]})
    assert (conf.apps[0].presence_rate, conf.apps[0].presence_burst) == (2.0, 5)
