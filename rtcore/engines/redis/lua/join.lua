-- JOIN: add a member (idempotent), count its user, publish member_join with the
-- cluster's first.
-- ARGV[4] channel, ARGV[5] conn, ARGV[6] member blob, ARGV[7] user or '', ARGV[8] skip or '',
-- ARGV[9] deadline (ms, Redis clock): later, the join was refused to its client: no effect.
local ms = now_ms()
if ms > tonumber(ARGV[9]) then return -1 end
prune(ms)
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 1 then return transitions end
if redis.call('HLEN', KEYS[1]) == 0 then transitions[#transitions + 1] = 'o' end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[5])
redis.call('SADD', KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2], ARGV[5])
local first = true
if ARGV[7] ~= '' then first = redis.call('HINCRBY', KEYS[3], ARGV[7], 1) == 1 end
if first and ARGV[7] ~= '' then transitions[#transitions + 1] = 'a:' .. ARGV[7] end
keep_alive(ms)
redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_join', ARGV[4], ARGV[6],
  first, ARGV[8], redis.call('HLEN', KEYS[1])}))
return transitions
