-- stream_leave: a client following a request's stream went away. Returns {followers left, status,
-- kind}: the API abandons a synchronous stream that nobody follows any more (`stream_abandon`,
-- after a grace period in which the client may come back).
-- KEYS: 1 record
-- ARGV: none
-- Builder: shared/scripts.py `stream_leave`.

local r = redis.call('HMGET', KEYS[1], 'status', 'kind', 'followers')
if not r[1] then return {0, false, false} end
local left = tonumber(r[3] or '0')
if r[1] ~= 'succeeded' and r[1] ~= 'failed' and r[1] ~= 'cancelled' and r[3] then
  left = redis.call('HINCRBY', KEYS[1], 'followers', -1)
end
return {left, r[1], r[2] or false}
