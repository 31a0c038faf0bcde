-- TAKE: one admission of a client's chain of shared token buckets (atomic: all or none),
-- at the Redis clock's time in ms (with its microseconds).
local t = redis.call('TIME')
return take_all(tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000)
