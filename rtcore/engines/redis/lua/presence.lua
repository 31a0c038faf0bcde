-- The presence scripts' common part (after clock.lua). Every presence script takes
-- KEYS = m, o, u, n, seq, pubsub (rtcore.engines.redis.keys.Keys.presence); ARGV[1] = the
-- publish command (PUBLISH on one Redis, SPUBLISH on a cluster), ARGV[2] = node,
-- ARGV[3] = presence ttl (ms).
-- The cluster's transitions this call made, returned to the calling node (which alone
-- reports them as webhooks): 'o' occupied, 'v' vacated, 'a:<user>' a user's first
-- connection, 'r:<user>' a user's last one.
local transitions = {}
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
    if last then transitions[#transitions + 1] = 'r:' .. user end
  end
  if redis.call('HLEN', KEYS[1]) == 0 then transitions[#transitions + 1] = 'v' end
  redis.call(ARGV[1], KEYS[6], cmsgpack.pack({'P', node_for_skip, 'member_leave',
    ARGV[4], blob, last, '', redis.call('HLEN', KEYS[1])}))
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
