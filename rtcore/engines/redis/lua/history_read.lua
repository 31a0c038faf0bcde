-- HISTORY_READ: read a channel's history (creating its stream identity, as the memory
-- store does).
-- ARGV: 1 new epoch, 2 meta ttl ms, 3 ttl ms, 4 since offset ('' : none), 5 limit,
-- 6 '1' reverse. Returns {epoch, top, first held offset, frame, frame, ...}.
local ms = now_ms()
local epoch = meta(ARGV[1], tonumber(ARGV[2]))
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
expire_head(ms, tonumber(ARGV[3]), 1000000)
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = top + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local limit = tonumber(ARGV[5])
local rows = {}
if limit > 0 then
  if ARGV[6] == '1' then
    local from = '+'
    if ARGV[4] ~= '' then from = '(' .. ARGV[4] .. '-0' end
    rows = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', limit)
  else
    local from = '-'
    if ARGV[4] ~= '' then from = '(' .. ARGV[4] .. '-0' end
    rows = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', limit)
  end
end
local out = {epoch, top, first}
for _, row in ipairs(rows) do
  local fields = row[2]
  for i = 1, #fields, 2 do if fields[i] == 'f' then out[#out + 1] = fields[i + 1] end end
end
return out
