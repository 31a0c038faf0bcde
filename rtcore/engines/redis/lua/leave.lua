-- LEAVE: remove a member (idempotent), publish member_leave with the cluster's last.
-- ARGV[4] channel, ARGV[5] conn
local ms = now_ms()
redis.call('SREM', KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2], ARGV[5])
member_left(ARGV[5], ARGV[2])
prune(ms)
return transitions
