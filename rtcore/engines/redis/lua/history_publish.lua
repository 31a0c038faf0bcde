-- HISTORY_PUBLISH: publish a message of a channel with history: offset, epoch, append,
-- publish; atomic.
-- ARGV: 1 publish command, 2 node, 3 (unused: epochs come from history.lua), 4 meta ttl ms,
-- 5 size, 6 ttl ms,
-- 7 the msg's msgpack map without offset and epoch (its header counts them), 8 target,
-- 9 name, 10 user or '', 11 skip or ''
local ms = now_ms()
local epoch = meta(ms, tonumber(ARGV[4]))
local offset = redis.call('HINCRBY', KEYS[2], 'top', 1)
local body = ARGV[7] .. cmsgpack.pack('offset') .. cmsgpack.pack(offset)
  .. cmsgpack.pack('epoch') .. cmsgpack.pack(epoch)
local frame = ws_header(#body) .. body
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], offset .. '-0', 'f', frame, 't', ms)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
expire_head(ms, tonumber(ARGV[6]), 10)
redis.call(ARGV[1], KEYS[3], cmsgpack.pack({'H', ARGV[2], ARGV[8], ARGV[9], ARGV[10],
  ARGV[11], offset, epoch, frame}))
return {epoch, offset}
