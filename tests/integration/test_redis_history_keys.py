"""Redis keys for history exist only for channels that have history (issue 20, finding 4):
each ``history`` request for a new channel created a key with a 24 h TTL (30,000 requests,
30,000 keys). The scripts run on a real redis-server, as the broker registers them, with the
Redis clock replaced by the last argument."""

from __future__ import annotations

import coredis
import trio

from rtcore.engines.redis.envelopes import msg_head
from rtcore.engines.redis.keys import Keys
from tests.integration.test_redis_scripts import NOW_FROM_LAST_ARG, with_clock

META_TTL = 86_400_000
NOW = 1_800_000_000_000


def read_args(now: int) -> list[bytes]:
    return [b"", str(META_TTL).encode(), b"60000", b"", b"100", b"0", str(now).encode()]


def publish_args(now: int) -> list[bytes]:
    head = msg_head({"t": "msg", "ch": "feed", "ev": "e", "data": 1})
    return [b"PUBLISH", b"n1", b"", str(META_TTL).encode(), b"100", b"60000", head] + [
        b"channel",
        b"feed",
        b"",
        b"",
        str(now).encode(),
    ]


async def test_history_reads_of_unused_channels_create_no_key(redis_url: str) -> None:
    read = with_clock("HISTORY_READ", NOW_FROM_LAST_ARG)
    publish = with_clock("HISTORY_PUBLISH", NOW_FROM_LAST_ARG)
    keys = Keys("budget")
    with trio.fail_after(30):
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
            epochs = set()
            for i in range(300):
                rows = await client.eval(read, keys.history("app", f"c{i}"), read_args(NOW))
                assert rows[1:] == [0, 1]  # top 0, nothing held
                epochs.add(rows[0])
            assert [k async for k in client.scan_iter(match=b"budget:*")] == []
            assert len(epochs) == 1  # the unused epoch: the same for every channel and node
            # the first publish creates the stream in the epoch reads showed
            feed = keys.history("app", "feed")
            epoch, offset = await client.eval(publish, feed, publish_args(NOW + 1000))
            assert (epoch, offset) == (next(iter(epochs)), 1)
            assert 0 < await client.pttl(feed[1]) <= META_TTL  # and it expires
            # a later period's unused epoch differs: a stream lost meanwhile is not mistaken
            rows = await client.eval(read, keys.history("app", "c0"), read_args(NOW + META_TTL))
            assert rows[0] != epoch
            await client.delete(feed[:2])
