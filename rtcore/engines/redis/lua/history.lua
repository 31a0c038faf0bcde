-- The history scripts' common part (after clock.lua). KEYS: the stream P:{app:ch}:h (entry
-- id "<offset>-0", fields f = the framed msg, t = ms), its meta P:{app:ch}:hm (hash: epoch,
-- top; created by the first publish, expiring meta_ttl after the last), and the channel's
-- pub/sub channel. The publish script gives the message its offset
-- and publishes it in one step: no gap, no duplicate, one order for every node. Expired
-- messages are deleted from the head as they are met, so a stream holds at most ~size
-- messages of at most ttl ms.
-- A channel without a stream shows top 0 of the unused epoch, and its next stream takes it
-- (a read creates no key: the keys of a channel exist only while it has history). The unused
-- epoch is the same on every node: the meta_ttl-long period of the Redis clock. A stream
-- lives at least meta_ttl after it took it, so a channel's next stream, created in a later
-- period, never takes the epoch of the one before (unless Redis lost the stream early:
-- evicted or flushed; docs/scaling.md asks for noeviction).
local function unused_epoch(ms, meta_ttl)
  return string.format('u%x', math.floor(ms / meta_ttl))
end
local function meta(ms, meta_ttl)
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not epoch then
    epoch = unused_epoch(ms, meta_ttl)
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  end
  redis.call('PEXPIRE', KEYS[2], meta_ttl)
  return epoch
end
-- A message published at t (ms) with a ttl (ms) is expired from t + ttl on: at exactly that
-- instant it is gone (core/history.py, MemoryHistory, draws the same boundary; both run
-- tests/cases/history_expiry_cases.json). Deletes at most budget expired messages.
local function expire_head(ms, ttl, budget)
  for _ = 1, budget do
    local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if #head == 0 then return end
    local fields = head[1][2]
    local t = 0
    for i = 1, #fields, 2 do if fields[i] == 't' then t = tonumber(fields[i + 1]) end end
    if t + ttl > ms then return end
    redis.call('XDEL', KEYS[1], head[1][1])
  end
end
local function ws_header(n)
  if n < 126 then return string.char(0x82, n) end
  if n < 65536 then return string.char(0x82, 126, math.floor(n / 256), n % 256) end
  return string.char(0x82, 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256,
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
