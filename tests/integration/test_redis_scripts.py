"""The Lua scripts against the Python rules they restate, on a real redis-server: the shared
tables of tests/cases run here on the scripts the broker registers (loaded from the package,
``rtcore.engines.redis.scripts``) with only the Redis clock replaced by the case's ``now``."""

from __future__ import annotations

from typing import Any

import coredis
import pytest
import trio

from rtcore.engines.redis import scripts
from rtcore.engines.redis.envelopes import msg_head
from rtcore.engines.redis.keys import Keys
from tests.cases import BUCKET_CASES, HISTORY_EXPIRY_CASES, ids

NOW_FROM_LAST_ARG = "local function now_ms() return tonumber(ARGV[#ARGV]) end\n"
"""Stands in for lua/clock.lua: the time is the script's last argument."""


def with_clock(script: str, clock: str) -> str:
    """The script ``script`` with ``clock`` in place of its first part (the clock)."""
    first, *rest = scripts.PARTS[script]
    assert first == "clock"
    return clock + "".join(scripts.part(name) for name in rest)


TAKE_AT = scripts.part("bucket") + "return take_all(tonumber(ARGV[#ARGV]))\n"
"""TAKE (lua/take.lua reads the Redis clock, then calls take_all) at the given time."""


def test_the_scripts_are_read_from_the_package() -> None:
    assert scripts.source("TAKE").endswith(scripts.part("take"))
    assert "local function take_all(ms)" in scripts.source("TAKE")
    assert "local function now_ms()" in scripts.source("JOIN")


@pytest.mark.parametrize("case", BUCKET_CASES, ids=ids(BUCKET_CASES))
async def test_the_shared_bucket_cases_on_redis(redis_url: str, case: dict[str, Any]) -> None:
    keys = [Keys("t").bucket("app", "u:ann", f"rule{i}") for i in range(len(case["buckets"]))]
    args: list[Any] = [len(keys)]
    for capacity, rate in case["buckets"]:
        args += [repr(float(capacity)), repr(float(rate))]
    got = []
    with trio.fail_after(20):
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
            for now, _, _ in case["steps"]:
                refused, wait = await client.eval(TAKE_AT, keys, [*args, repr(float(now))])
                got.append([now, int(refused), int(wait)])
    assert got == case["steps"]


@pytest.mark.parametrize("case", HISTORY_EXPIRY_CASES, ids=ids(HISTORY_EXPIRY_CASES))
async def test_the_shared_history_expiry_cases_on_redis(
    redis_url: str, case: dict[str, Any]
) -> None:
    keys = Keys("t").history("app", "feed")
    publish_keys = [*keys, Keys("t").published("app", "feed", "n1-1")]
    ttl = str(case["ttl"]).encode()
    publish = with_clock("HISTORY_PUBLISH", NOW_FROM_LAST_ARG)
    read = with_clock("HISTORY_READ", NOW_FROM_LAST_ARG)
    with trio.fail_after(20):
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
            for i, published in enumerate(case["published"], 1):
                head = msg_head({"t": "msg", "data": i})
                args = [b"PUBLISH", b"n1", b"e1", b"86400000", b"100", ttl, head]
                args += [b"channel", b"feed", b"", b""]
                args += [str(published).encode(), b"300000", str(published).encode()]  # on time
                await client.eval(publish, publish_keys, args)
            args = [b"e1", b"86400000", ttl, b"", b"100", b"0", str(case["now"]).encode()]
            rows = await client.eval(read, keys, args)
    first, frames = int(rows[2]), rows[3:]
    assert int(rows[1]) == len(case["published"])  # the top: every message was published
    assert list(range(first, first + len(frames))) == case["held"]


async def test_a_history_publish_past_its_deadline_is_refused_and_writes_nothing(
    redis_url: str,
) -> None:
    keys = Keys("t")
    marker = keys.published("app", "feed", "n1-1")
    publish = with_clock("HISTORY_PUBLISH", NOW_FROM_LAST_ARG)
    head = msg_head({"t": "msg", "data": 1})
    args = [b"PUBLISH", b"n1", b"e1", b"86400000", b"100", b"60000", head]
    args += [b"channel", b"feed", b"", b"", b"1000", b"300000"]
    with trio.fail_after(20):
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
            late = await client.eval(
                publish, [*keys.history("app", "feed"), marker], [*args, b"1001"]
            )
            assert late[0] == b"late"
            assert await client.exists([*keys.history("app", "feed")[:2], marker]) == 0
            on_time = await client.eval(
                publish, [*keys.history("app", "feed"), marker], [*args, b"1000"]
            )
            # a new stream takes the unused epoch: this Redis run's, and the clock's period (0)
            run = (await client.info("server"))["run_id"]
            epoch = b"u" + str(run)[:8].encode() + b"0"
            assert (on_time[0], on_time[1]) == (epoch, 1)
            assert await client.get(marker) == epoch + b" 1"  # what settling reads
