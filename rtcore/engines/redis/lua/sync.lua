-- SYNC: re-publish a node's members of one channel after Redis came back (or lost its
-- data).
-- ARGV[4] channel, then ARGV[5..] triples conn, blob, user or '': the node's members.
-- After a Redis outage: make the node's entries exactly these (joins and leaves published;
-- a member whose profile changed meanwhile: member_update, flagged true as re-published).
local ms = now_ms()
prune(ms)
local want = {}
for i = 5, #ARGV, 3 do want[ARGV[i]] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]} end
local set = KEYS[1]:sub(1, -2) .. 'c:' .. ARGV[2]
for _, conn in ipairs(redis.call('SMEMBERS', set)) do
  if not want[conn] then redis.call('SREM', set, conn); member_left(conn, ARGV[2]) end
end
for conn, m in pairs(want) do
  local old = redis.call('HGET', KEYS[1], conn)
  if old and old ~= m[2] then
    redis.call('HSET', KEYS[1], conn, m[2])
    redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_update', ARGV[4], m[2],
      true, '', redis.call('HLEN', KEYS[1])}))
  elseif not old then
    if redis.call('HLEN', KEYS[1]) == 0 then transitions[#transitions + 1] = 'o' end
    redis.call('HSET', KEYS[1], conn, m[2])
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), conn)
    redis.call('SADD', set, conn)
    local first = true
    if m[3] ~= '' then first = redis.call('HINCRBY', KEYS[3], m[3], 1) == 1 end
    if first and m[3] ~= '' then transitions[#transitions + 1] = 'a:' .. m[3] end
    redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', ARGV[2], 'member_join', ARGV[4], m[2],
      first, '', redis.call('HLEN', KEYS[1])}))
  end
end
keep_alive(ms)
return transitions
