-- REFRESH: the node's heartbeat in one channel; prunes dead nodes' members.
-- ARGV[4] channel.
local ms = now_ms()
prune(ms)
keep_alive(ms)
return transitions
