-- stream_abandon: nobody follows a running streamed request any more: mark it abandoned and tell the
-- worker running it, on the worker's own channel, to stop the upstream call (`x|<request id>`). Its
-- next relay would say so too (stream_relay returns -1), for a worker that missed the message.
-- Returns 1 when abandoned; 0 when it ended meanwhile or a follower came back.
-- KEYS: 1 record
-- ARGV: 1 request id
-- Builder: shared/scripts.py `stream_abandon`.

local r = redis.call('HMGET', KEYS[1], 'status', 'followers', 'provider', 'worker')
if r[1] ~= 'running' and r[1] ~= 'queued' then return 0 end
if tonumber(r[2] or '0') > 0 then return 0 end
redis.call('HSET', KEYS[1], 'abandoned', '1')
if r[1] == 'running' and r[3] and r[4] then
  local provider, worker = r[3], r[4]
  redis.call('PUBLISH', ${worker_wake_channel(provider, worker)}, 'x|' .. ARGV[1])
end
return 1
