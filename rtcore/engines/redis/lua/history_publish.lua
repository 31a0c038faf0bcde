-- HISTORY_PUBLISH: publish a message of a channel with history: offset, epoch, append,
-- publish, mark it applied; atomic. Refused (nothing written) past its deadline, so that a
-- node that told its sender "not published" is never proved wrong by a late execution.
-- KEYS: 1 stream, 2 meta, 3 pubsub, 4 the publish's marker
-- ARGV: 1 publish command, 2 node, 3 (unused: epochs come from history.lua), 4 meta ttl ms,
-- 5 size, 6 ttl ms,
-- 7 the msg's msgpack map without offset and epoch (its header counts them), 8 target,
-- 9 name, 10 user or '', 11 skip or '', 12 deadline (ms, Redis clock), 13 marker ttl ms
local ms = now_ms()
if ms > tonumber(ARGV[12]) then
  return {'late', ms}
end
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
redis.call('SET', KEYS[4], epoch .. ' ' .. offset, 'PX', tonumber(ARGV[13]))
return {epoch, offset, ms}
