-- The token bucket over Redis: rtcore/core/limits/bucket.py (take_all) is the same rule in
-- Python, and tests/cases/bucket_cases.json is run against both. KEYS: one bucket per rule,
-- a hash {tokens, stamp}. ARGV: n, then per rule capacity, refill per ms. A bucket never
-- seen is full; a clock that goes back earns nothing (stamp never decreases). Admit only if
-- every bucket holds a token -- exactly one is enough; then take one from each. Returns
-- {0, 0} (admitted) or {index of the first refusing rule, wait in ms (rounded up) until
-- every bucket holds a token}; a refusal takes nothing (the buckets are only refilled).
local function take_all(ms)
  local n = tonumber(ARGV[1])
  local tokens, stamps = {}, {}
  local refused, wait = 0, 0
  for i = 1, n do
    local cap = tonumber(ARGV[2 * i]); local rate = tonumber(ARGV[2 * i + 1])
    local b = redis.call('HMGET', KEYS[i], 'tokens', 'stamp')
    local have, stamp = cap, ms
    if b[1] then
      stamp = math.max(ms, tonumber(b[2]))
      have = math.min(cap, tonumber(b[1]) + (stamp - tonumber(b[2])) * rate)
    end
    tokens[i], stamps[i] = have, stamp
    if have < 1 then
      wait = math.max(wait, (1 - have) / rate)
      if refused == 0 then refused = i end
    end
  end
  local cost = refused == 0 and 1 or 0
  for i = 1, n do
    local cap = tonumber(ARGV[2 * i]); local rate = tonumber(ARGV[2 * i + 1])
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - cost), 'stamp',
      tostring(stamps[i]))
    redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate) + 1000)
  end
  if refused > 0 then return {refused, math.ceil(wait)} end
  return {0, 0}
end
