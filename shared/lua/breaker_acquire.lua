-- breaker_acquire: asks a provider's breaker for one call. Returns {verdict, retry-in ms, probe
-- generation}; verdict is closed / probe (let through) or open / half_open (refused).
-- KEYS: 1 breaker
-- ARGV: 1 now_ms, 2 probes, 3 probe_timeout_ms, 4 channel, 5 provider, 6 cooldown_ms
-- Builder: shared/scripts.py `breaker_acquire`.

--! include breaker_moves

local st = redis.call('HGET', KEYS[1], 'st')
if not st or st == 'closed' then return {'closed', 0, 0} end
local now = tonumber(ARGV[1])
if st == 'half_open' then
  local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
  if now - since >= tonumber(ARGV[3]) then
    reopen(now)
    st = 'open'
  end
end
if st == 'open' then
  local till = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if now < till then return {'open', till - now, 0} end
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  local deadline = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'st', 'half_open', 'granted', 0, 'since', now, 'until', deadline)
  publish('half_open', deadline)
end
local granted = tonumber(redis.call('HGET', KEYS[1], 'granted') or '0')
if granted < tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'granted', 1)
  return {'probe', 0, tonumber(redis.call('HGET', KEYS[1], 'gen'))}
end
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
return {'half_open', math.max(since + tonumber(ARGV[3]) - now, 1), 0}
