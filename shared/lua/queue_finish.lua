-- queue_finish: stores the outcome, signals the waiters and retires the arq job (arq's own clean-up,
-- done here so that the result and the job's removal are one atomic step and one round trip), and
-- gives the worker's job slot back; for a cache leader, stores the answer and releases the lead.
-- Only the job's current holder stores (lib/holder.lua): a worker whose lease lapsed while it was
-- paused, and whose job another worker retook, neither overwrites nor retires that worker's job.
-- Returns 1, 0 if the request had already ended (the job is retired all the same), or -1 if fenced
-- (nothing written but the worker's slot given back).
-- KEYS: 1 record, 2 watchers, 3 queue, 4 arq_job, 5 in_progress, 6 retry, 7 room[, 8 cache_entry,
--   9 cache_lead]
-- ARGV: 1 stored (the outcome), 2 finished_ms, 3 record_ttl_s, 4 message (`<request id>|<stored>`),
--   5 status, 6 job_id (arq's), 7 cache_ttl_s, 8 worker, 9 handed_prefix (a hand-over ending before
--   its worker's next take leaves the worker's handed set here)
-- Builder: shared/scripts.py `finish`.

--! include publish_outcome
--! include batch_hook
--! include slot_back
--! include holder

local record, watchers, queue, arq_job, in_progress, retry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local room, cache_entry, cache_lead = KEYS[7], KEYS[8], KEYS[9]
local stored, finished_ms, record_ttl_s, message, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local job_id, cache_ttl_s, worker, handed_prefix = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
slot_back(room, worker)
if worker ~= '' then redis.call('ZREM', handed_prefix .. worker, job_id) end
local held = holder(record, job_id, worker)
if held == -1 then return -1 end
redis.call('ZREM', queue, job_id)
redis.call('DEL', arq_job, in_progress, retry)
if cache_lead then redis.call('DEL', cache_lead) end
if held == 0 then return 0 end
redis.call('HSET', record, 'status', status, 'result', stored, 'finished', finished_ms)
redis.call('EXPIRE', record, record_ttl_s)
if cache_entry and status == 'succeeded' then
  redis.call('SET', cache_entry, string.sub(stored, 3), 'EX', cache_ttl_s)
end
publish_outcome(record, watchers, message)
batch_item_ended(record, string.match(message, '^[^|]*'), stored, finished_ms, record_ttl_s)
return 1
