"""What the Redis engine writes to Redis: key layout, envelopes and scripts (sans-IO).

The trio side (``rtcore.engines.redis.broker``) sends these; this module only names and
shapes them, so the layout is unit-tested without a Redis and documented in one place
(docs/scaling.md repeats the table).

Key layout (``P`` is ``[broker] prefix``). Every key of a channel and its pub/sub channel
share the hash tag ``{app:channel}``, so each script touches one Redis Cluster slot; the
app-wide keys share ``{app}``::

    P:{app:ch}            pub/sub: the channel's messages and presence events
    P:{app:ch}:m          hash   connection id -> member (member_blob: user, info)
    P:{app:ch}:o          zset   connection id -> join sequence number (listing order)
    P:{app:ch}:u          hash   user -> connections of that user in the channel
    P:{app:ch}:n          zset   node -> presence deadline (ms, Redis clock)
    P:{app:ch}:c:<node>   set    the connection ids that node holds in the channel
    P:{app:ch}:seq        string the channel's join sequence counter
    P:{app}               pub/sub: broadcasts and control (user events, disconnects)
    P:{app}:revoked       zset   "user\\0session" -> until (ms, Unix time)
    P:{app}:rl:<key>:<rule>   hash   a shared token bucket {tokens, stamp}

Envelopes (what crosses pub/sub) are msgpack arrays whose first element says what they are:

* ``["M", node, target, name, user, skip, data]``: a publication; ``data`` is the framed
  WebSocket message, fanned out as is on every node (never re-encoded).
* ``["P", node, kind, channel, member, flag, skip]``: a presence event built by a script
  (so that ``first``/``last`` are the cluster's): ``member`` is a :func:`member_blob`,
  ``flag`` is first (join) or last (leave) for the cluster, ``skip`` a member id or "".
* ``["C", node, op, args]``: a control operation every node applies to its own connections
  (user events, disconnects, ended sessions).
* ``["H", node, target, name, user, skip, offset, epoch, data]``: a message of a channel with
  history, built by the publish script once it gave the message its offset (``data`` is the
  framed ``msg``, offset and epoch inside).

History keys: ``P:{app:ch}:h`` (a stream; entry id ``<offset>-0``, fields ``f`` the framed
msg and ``t`` its time) and ``P:{app:ch}:hm`` (hash: ``epoch``, ``top``).
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

MESSAGE = b"M"
PRESENCE = b"P"
CONTROL = b"C"
HISTORY = b"H"


@attrs.frozen
class Keys:
    """Key and pub/sub channel names under one prefix."""

    prefix: str

    def channel_tag(self, app: str, channel: str) -> str:
        return f"{self.prefix}:{{{app}:{channel}}}"

    def channel_pubsub(self, app: str, channel: str) -> bytes:
        return self.channel_tag(app, channel).encode()

    def presence(self, app: str, channel: str) -> list[bytes]:
        """The keys the presence scripts take, in their KEYS order: m, o, u, n, seq, pubsub."""
        tag = self.channel_tag(app, channel)
        return [f"{tag}:{suffix}".encode() for suffix in ("m", "o", "u", "n", "seq")] + [
            tag.encode()
        ]

    def app_pubsub(self, app: str) -> bytes:
        return f"{self.prefix}:{{{app}}}".encode()

    def revoked(self, app: str) -> bytes:
        return f"{self.prefix}:{{{app}}}:revoked".encode()

    def bucket(self, app: str, client_key: str, rule: str) -> bytes:
        """A shared token bucket: every rule of one client in one slot (hash tag)."""
        return f"{self.prefix}:{{{app}:rl:{client_key}}}:{rule}".encode()


def message(node: str, target: str, name: str | None, user: str | None, skip: str | None,
            data: bytes) -> bytes:  # fmt: skip
    packed: bytes = msgpack.packb([MESSAGE, node, target, name, user, skip, data])
    return packed


def control(node: str, op: str, args: Any) -> bytes:
    packed: bytes = msgpack.packb([CONTROL, node, op, args])
    return packed


def member_blob(user: str | None, info: Any) -> bytes:
    """What a presence hash stores for a member: the user id's length (2 bytes, big endian),
    the user id (UTF-8, empty when anonymous), then the member info as msgpack. The scripts
    read the user without a msgpack decoder (a profile may hold bin values)."""
    raw = (user or "").encode()
    if len(raw) > 0xFFFF:
        raise ValueError("a user id longer than 65,535 bytes")  # tokens' sub are far shorter
    packed: bytes = msgpack.packb(info)
    return len(raw).to_bytes(2, "big") + raw + packed


@attrs.frozen
class Envelope:
    """A decoded envelope."""

    kind: bytes
    node: str
    fields: tuple[Any, ...]


class BadEnvelope(Exception):
    """Bytes on an rtcore pub/sub channel that are not an envelope (another writer's, or a
    bug): logged and skipped by the node."""


def decode(data: bytes) -> Envelope:
    """An envelope; presence envelopes come from Lua (``cmsgpack``: strings as raw bytes)."""
    try:
        # Every envelope is a short array whose first item is a one-letter string: byte 2
        # says which. Presence comes from Lua, whose strings are raw bytes (a member blob is
        # not UTF-8); the others are rtcore's own msgpack.
        raw = data[2:3] in (PRESENCE, HISTORY)
        items = msgpack.unpackb(data, raw=raw, use_list=False)
        if not isinstance(items, tuple) or len(items) < 3:
            raise BadEnvelope(f"not an envelope: {data[:40]!r}")
        kind, node = items[0], items[1]
        kind = kind.encode() if isinstance(kind, str) else kind
        node = node.decode() if isinstance(node, bytes) else node
        if kind not in (MESSAGE, PRESENCE, CONTROL, HISTORY) or not isinstance(node, str):
            raise BadEnvelope(f"not an envelope: {data[:40]!r}")
        return Envelope(kind, node, items[2:])
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
        raise BadEnvelope(f"undecodable envelope: {exc}") from exc


def text(value: bytes | None) -> str | None:
    """A raw string field (None and "" stay as they are meant: absent)."""
    if value is None or value == b"":
        return None
    return value.decode()


def unpack_member(blob: bytes) -> tuple[str | None, Any]:
    """``(user or None, info)`` from :func:`member_blob`'s bytes."""
    n = int.from_bytes(blob[:2], "big")
    return (blob[2 : 2 + n].decode() or None), msgpack.unpackb(blob[2 + n :], raw=False)


# -- scripts -----------------------------------------------------------------------------------
#
# Common shape: KEYS = m, o, u, n, seq, pubsub (Keys.presence); ARGV[1] = the publish command
# (PUBLISH on one Redis, SPUBLISH on a cluster), ARGV[2] = node, ARGV[3] = presence ttl (ms).
# Times are Redis's own clock (TIME), so nodes on different machines never disagree.

_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
"""Lua: the Redis clock in milliseconds (scripts never take time from a node)."""

_PRUNE = (
    _NOW_MS
    + """
local function member_left(conn, node_for_skip)
  local blob = redis.call('HGET', KEYS[1], conn)
  if not blob then return end
  redis.call('HDEL', KEYS[1], conn)
  redis.call('ZREM', KEYS[2], conn)
  local user = blob:sub(3, 2 + blob:byte(1) * 256 + blob:byte(2))
  local last = true
  if user ~= '' then
    local left = redis.call('HINCRBY', KEYS[3], user, -1)
    if left <= 0 then redis.call('HDEL', KEYS[3], user) else last = false end
  end
  redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', node_for_skip, 'member_leave',
    ARGV[4], blob, last, ''}))
end
local function prune(ms)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ms)
  for _, node in ipairs(dead) do
    local set = KEYS[1]:sub(1, -2) .. 'c:' .. node
    for _, conn in ipairs(redis.call('SMEMBERS', set)) do member_left(conn, ARGV[2]) end
    redis.call('DEL', set)
    redis.call('ZREM', KEYS[4], node)
  end
  return #dead
end
local function keep_alive(ms)
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[4], ms + ttl, ARGV[2])
  local keep = ttl * 3
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], keep) end
  redis.call('PEXPIRE', KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2], keep)
end
"""
)

JOIN = (
    _PRUNE
    + """
-- ARGV[4] channel, ARGV[5] conn, ARGV[6] member blob, ARGV[7] user or '', ARGV[8] skip or ''
local ms = now_ms()
prune(ms)
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[5])
redis.call('SADD', KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2], ARGV[5])
local first = true
if ARGV[7] ~= '' then first = redis.call('HINCRBY', KEYS[3], ARGV[7], 1) == 1 end
keep_alive(ms)
redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_join', ARGV[4], ARGV[6],
  first, ARGV[8]}))
return 1
"""
)
"""Add a member (idempotent), count its user, publish ``member_join`` with the cluster's
``first``."""

LEAVE = (
    _PRUNE
    + """
-- ARGV[4] channel, ARGV[5] conn
local ms = now_ms()
redis.call('SREM', KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2], ARGV[5])
member_left(ARGV[5], ARGV[2])
prune(ms)
return 1
"""
)
"""Remove a member (idempotent), publish ``member_leave`` with the cluster's ``last``."""

UPDATE = (
    _PRUNE
    + """
-- ARGV[4] channel, ARGV[5] conn, ARGV[6] member blob, ARGV[7] skip or ''
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_update', ARGV[4], ARGV[6],
  false, ARGV[7]}))
return 1
"""
)
"""Replace a member's profile, publish ``member_update``."""

REFRESH = (
    _PRUNE
    + """
-- ARGV[4] channel. The node's heartbeat for one channel; prunes dead nodes' members.
local ms = now_ms()
local pruned = prune(ms)
keep_alive(ms)
return pruned
"""
)

SYNC = (
    _PRUNE
    + """
-- ARGV[4] channel, then ARGV[5..] triples conn, blob, user or '': the node's members.
-- After a Redis outage: make the node's entries exactly these (joins and leaves published).
local ms = now_ms()
prune(ms)
local want = {}
for i = 5, #ARGV, 3 do want[ARGV[i]] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]} end
local set = KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2]
for _, conn in ipairs(redis.call('SMEMBERS', set)) do
  if not want[conn] then redis.call('SREM', set, conn); member_left(conn, ARGV[2]) end
end
for conn, m in pairs(want) do
  if redis.call('HEXISTS', KEYS[1], conn) == 0 then
    redis.call('HSET', KEYS[1], conn, m[2])
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), conn)
    redis.call('SADD', set, conn)
    local first = true
    if m[3] ~= '' then first = redis.call('HINCRBY', KEYS[3], m[3], 1) == 1 end
    redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_join', ARGV[4], m[2],
      first, ''}))
  end
end
keep_alive(ms)
return 1
"""
)
"""Re-publish a node's members of one channel after Redis came back (or lost its data)."""

MEMBERS = (
    _PRUNE
    + """
-- ARGV[4] channel, ARGV[5] after (a join sequence number, or '-inf'), ARGV[6] limit
prune(now_ms())
local after = ARGV[5] == '-inf' and '-inf' or '(' .. ARGV[5]
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], after, '+inf', 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[6]) + 1)
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], rows[i]) or ''
end
return out
"""
)
"""A page of members: ``[seq, blob, seq, blob, ...]`` (up to limit + 1 rows)."""

TAKE = """
-- KEYS: one bucket per rule. ARGV: n, then per rule capacity, refill per ms.
-- Admit only if every bucket holds a token; then take one from each. Returns
-- {0, 0} (admitted) or {index of the first refusing rule, wait in ms}.
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
local tokens = {}
local refused, wait = 0, 0
for i = 1, n do
  local cap = tonumber(ARGV[2 * i]); local rate = tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'stamp')
  local have = cap
  if b[1] then
    have = math.min(cap, tonumber(b[1]) + math.max(0, ms - tonumber(b[2])) * rate)
  end
  tokens[i] = have
  if have < 1 then
    wait = math.max(wait, (1 - have) / rate)
    if refused == 0 then refused = i end
  end
end
if refused > 0 then return {refused, math.ceil(wait)} end
for i = 1, n do
  local cap = tonumber(ARGV[2 * i]); local rate = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - 1), 'stamp', tostring(ms))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate) + 1000)
end
return {0, 0}
"""
"""One admission of a client's chain of shared token buckets (atomic: all or none)."""


# -- history (Redis Streams) -------------------------------------------------------------------
#
# KEYS: the stream P:{app:ch}:h (entry id "<offset>-0", fields f = the framed msg, t = ms),
# its meta P:{app:ch}:hm (hash: epoch, top), and the channel's pub/sub channel. The script
# gives the message its offset and publishes it in one step: no gap, no duplicate, one order
# for every node. Expired messages (older than the ttl) are deleted from the head as they are
# met, so a stream holds at most ~size messages of at most ttl seconds.

_HISTORY = (
    _NOW_MS
    + """
local function meta(new_epoch, meta_ttl)
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  end
  redis.call('PEXPIRE', KEYS[2], meta_ttl)
  return epoch
end
local function expire_head(cutoff, budget)
  for _ = 1, budget do
    local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if #head == 0 then return end
    local fields = head[1][2]
    local t = 0
    for i = 1, #fields, 2 do if fields[i] == 't' then t = tonumber(fields[i + 1]) end end
    if t >= cutoff then return end
    redis.call('XDEL', KEYS[1], head[1][1])
  end
end
local function ws_header(n)
  if n < 126 then return string.char(0x82, n) end
  if n < 65536 then return string.char(0x82, 126, math.floor(n / 256), n % 256) end
  return string.char(0x82, 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256,
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
"""
)

HISTORY_PUBLISH = (
    _HISTORY
    + """
-- ARGV: 1 publish command, 2 node, 3 new epoch, 4 meta ttl ms, 5 size, 6 ttl ms,
-- 7 the msg's msgpack map without offset and epoch (its header counts them), 8 target,
-- 9 name, 10 user or '', 11 skip or ''
local ms = now_ms()
local epoch = meta(ARGV[3], tonumber(ARGV[4]))
local offset = redis.call('HINCRBY', KEYS[2], 'top', 1)
local body = ARGV[7] .. cmsgpack.pack('offset') .. cmsgpack.pack(offset)
  .. cmsgpack.pack('epoch') .. cmsgpack.pack(epoch)
local frame = ws_header(#body) .. body
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], offset .. '-0', 'f', frame, 't', ms)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
expire_head(ms - tonumber(ARGV[6]), 10)
redis.call(ARGV[1], KEYS[3], cmsgpack.pack({'H', ARGV[2], ARGV[8], ARGV[9], ARGV[10],
  ARGV[11], offset, epoch, frame}))
return {epoch, offset}
"""
)
"""Publish a message of a channel with history: offset, epoch, append, publish; atomic."""

HISTORY_READ = (
    _HISTORY
    + """
-- ARGV: 1 new epoch, 2 meta ttl ms, 3 ttl ms, 4 since offset ('' : none), 5 limit,
-- 6 '1' reverse. Returns {epoch, top, first held offset, frame, frame, ...}.
local ms = now_ms()
local epoch = meta(ARGV[1], tonumber(ARGV[2]))
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
expire_head(ms - tonumber(ARGV[3]), 1000000)
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = top + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local limit = tonumber(ARGV[5])
local rows = {}
if limit > 0 then
  if ARGV[6] == '1' then
    local from = '+'
    if ARGV[4] ~= '' then from = '(' .. ARGV[4] .. '-0' end
    rows = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', limit)
  else
    local from = '-'
    if ARGV[4] ~= '' then from = '(' .. ARGV[4] .. '-0' end
    rows = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', limit)
  end
end
local out = {epoch, top, first}
for _, row in ipairs(rows) do
  local fields = row[2]
  for i = 1, #fields, 2 do if fields[i] == 'f' then out[#out + 1] = fields[i + 1] end end
end
return out
"""
)
"""Read a channel's history (creating its stream identity, as the memory store does)."""


def history_keys(keys: Keys, app: str, channel: str) -> list[bytes]:
    tag = keys.channel_tag(app, channel)
    return [f"{tag}:h".encode(), f"{tag}:hm".encode(), tag.encode()]


def msg_head(wire: dict[str, Any]) -> bytes:
    """A ``msg``'s msgpack map without ``offset`` and ``epoch`` but counting them in its
    header: the publish script appends the two (a msg has fewer than 14 fields: a fixmap)."""
    packed: bytes = msgpack.packb(wire)
    count = len(wire)
    if count > 13 or packed[0] != 0x80 | count:
        raise ValueError("a msg map of more than 13 fields")  # our bug: frames are fixed
    return bytes([0x80 | (count + 2)]) + packed[1:]
