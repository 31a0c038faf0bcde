-- UPDATE: replace a member's profile, publish member_update.
-- ARGV[4] channel, ARGV[5] conn, ARGV[6] member blob, ARGV[7] skip or ''
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_update', ARGV[4], ARGV[6],
  false, ARGV[7], redis.call('HLEN', KEYS[1])}))
return 1
