-- MEMBERS: {transitions, a page of members {seq, blob, seq, blob, ...} (up to limit + 1
-- rows)}: the transitions of the members its prune removed.
-- ARGV[4] channel, ARGV[5] after (a join sequence number, or '-inf'), ARGV[6] limit
prune(now_ms())
local after = ARGV[5] == '-inf' and '-inf' or '(' .. ARGV[5]
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], after, '+inf', 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[6]) + 1)
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], rows[i]) or ''
end
return {transitions, out}
