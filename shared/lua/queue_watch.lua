-- queue_watch: registers a long-poll and reads the record at once; another tenant's request reads as
-- missing and is not watched, so no caller waits on (or learns the timing of) a job not theirs.
-- KEYS: 1 watchers, 2 record
-- ARGV: 1 channel, 2 ttl_s, 3 tenant (the caller's; '': any tenant, and a request not recorded yet)
-- Builder: shared/scripts.py `watch`.

local r = redis.call('HMGET', KEYS[2], 'status', 'result', 'tenant')
if ARGV[3] ~= '' and r[3] ~= ARGV[3] then return {false, false} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {r[1], r[2]}
