-- breaker_record: counts one call's outcome. Returns the state after the call.
-- KEYS: 1 breaker, 2 window
-- ARGV: 1 now_ms, 2 verdict (ok / fail / neutral), 3 probe_gen (0: none), 4 channel, 5 provider,
--   6 cooldown_ms, 7 failure_threshold, 8 error_rate, 9 min_requests, 10 window_ms, 11 buckets
-- Builder: shared/scripts.py `breaker_record`.

--! include breaker_moves

local now = tonumber(ARGV[1])
local verdict = ARGV[2]
local gen = tonumber(ARGV[3])
local st = redis.call('HGET', KEYS[1], 'st') or 'closed'
local my_probe = gen > 0 and st == 'half_open' and tonumber(redis.call('HGET', KEYS[1], 'gen')) == gen
if verdict == 'neutral' then
  -- the provider said nothing about its health (bad input, say): give the probe slot back
  if my_probe then redis.call('HINCRBY', KEYS[1], 'granted', -1) end
  return st
end
local window_ms = tonumber(ARGV[10])
local buckets = tonumber(ARGV[11])
local bucket = math.floor(now / (window_ms / buckets))
local field = bucket .. (verdict == 'ok' and ':ok' or ':err')
local total, errors = 0, 0
if redis.call('HINCRBY', KEYS[2], field, 1) == 1 or verdict == 'fail' then
  -- a new bucket, or a failure to judge: drop buckets that left the window, sum the rest
  local flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    local b = tonumber(string.match(flat[i], '^(%d+):'))
    if b == nil or b <= bucket - buckets then
      redis.call('HDEL', KEYS[2], flat[i])
    else
      local n = tonumber(flat[i + 1])
      total = total + n
      if string.sub(flat[i], -4) == ':err' then errors = errors + n end
    end
  end
end
redis.call('PEXPIRE', KEYS[2], window_ms * 2)
if verdict == 'ok' then
  redis.call('HSET', KEYS[1], 'fails', 0)
  if my_probe then
    redis.call('HSET', KEYS[1], 'st', 'closed', 'granted', 0, 'until', 0)
    redis.call('DEL', KEYS[2])
    publish('closed', 0)
    return 'closed'
  end
  return st
end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if my_probe then
  reopen(now)
  return 'open'
end
if st ~= 'closed' then return st end
if fails >= tonumber(ARGV[7]) or (total >= tonumber(ARGV[9]) and errors / total >= tonumber(ARGV[8])) then
  reopen(now)
  return 'open'
end
return st
