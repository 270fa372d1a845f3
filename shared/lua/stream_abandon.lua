-- stream_abandon: nobody follows a synchronous streamed request any more (its client went away and
-- none came back). Still queued, it is cancelled as queue_cancel would; running, it is marked
-- abandoned and the worker running it is told, on the worker's own channel, to stop the upstream call
-- (`x|<request id>`); its next relay would say so too (stream_relay returns -1), for a worker that
-- missed the message.
-- Returns 2 when cancelled, 1 when abandoned; 0 when it ended meanwhile or a follower came back.
-- KEYS: 1 record, 2 watchers
-- ARGV: 1 request id, 2 stored (the cancelled outcome), 3 finished_ms, 4 record_ttl_s, 5 job_prefix
--   (arq's)
-- Builder: shared/scripts.py `stream_abandon`.

--! include publish_outcome

local r = redis.call('HMGET', KEYS[1], 'status', 'followers', 'provider', 'worker', 'job', 'queue')
if r[1] ~= 'running' and r[1] ~= 'queued' then return 0 end
if tonumber(r[2] or '0') > 0 then return 0 end
if r[1] == 'queued' then
  redis.call('ZREM', r[6], r[5])
  redis.call('DEL', ARGV[5] .. r[5])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'result', ARGV[2], 'finished', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  publish_outcome(KEYS[1], KEYS[2], ARGV[1] .. '|' .. ARGV[2])
  return 2
end
redis.call('HSET', KEYS[1], 'abandoned', '1')
if r[3] and r[4] then
  local provider, worker = r[3], r[4]
  redis.call('PUBLISH', ${worker_wake_channel(provider, worker)}, 'x|' .. ARGV[1])
end
return 1
