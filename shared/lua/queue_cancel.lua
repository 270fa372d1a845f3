-- queue_cancel: cancels a request no worker has started. Another tenant's request is 'missing', as
-- one that does not exist. Returns 'cancelled', or the status that forbids it.
-- KEYS: 1 record, 2 watchers
-- ARGV: 1 stored (the outcome), 2 finished_ms, 3 record_ttl_s, 4 message, 5 job_prefix (arq's),
--   6 tenant (the caller's; '': any tenant)
-- Builder: shared/scripts.py `cancel`.

--! include publish_outcome
--! include batch_hook

local r = redis.call('HMGET', KEYS[1], 'status', 'tenant')
local st = r[1]
if not st or (ARGV[6] ~= '' and r[2] ~= ARGV[6]) then return 'missing' end
if st ~= 'queued' then return st end
local job = redis.call('HGET', KEYS[1], 'job')
redis.call('ZREM', redis.call('HGET', KEYS[1], 'queue'), job)
redis.call('DEL', ARGV[5] .. job)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'result', ARGV[1], 'finished', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
publish_outcome(KEYS[1], KEYS[2], ARGV[4])
batch_item_ended(KEYS[1], string.match(ARGV[4], '^[^|]*'), ARGV[1], ARGV[2], ARGV[3])
return 'cancelled'
