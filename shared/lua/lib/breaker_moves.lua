-- Fragment: publish(st, till) and reopen(now), the breaker's state moves, each published. Reads
-- KEYS[1] (the breaker hash), ARGV[4] (channel), ARGV[5] (provider) and ARGV[6] (cooldown ms) of
-- the script that includes it (breaker_acquire, breaker_record).

local function publish(st, till)
  redis.call('PUBLISH', ARGV[4], 'breaker|' .. ARGV[5] .. '|' .. st .. '|' .. till)
end
local function reopen(now)
  local till = now + tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'st', 'open', 'until', till, 'granted', 0)
  publish('open', till)
end
