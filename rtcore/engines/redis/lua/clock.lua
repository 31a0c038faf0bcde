-- The Redis clock in milliseconds: scripts never take time from a node, so nodes on
-- different machines never disagree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
