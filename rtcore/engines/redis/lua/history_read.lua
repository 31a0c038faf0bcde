-- HISTORY_READ: read a channel's history; a channel without a stream reads as top 0 of
-- the unused epoch, and nothing is created (history.lua).
-- ARGV: 1 (unused), 2 meta ttl ms, 3 ttl ms, 4 since offset ('' : none), 5 limit,
-- 6 '1' reverse. Returns {epoch, top, first held offset, frame, frame, ...}.
local ms = now_ms()
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then return {unused_epoch(ms, tonumber(ARGV[2])), 0, 1} end
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
