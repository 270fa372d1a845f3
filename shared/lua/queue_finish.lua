-- queue_finish: stores the outcome, signals the waiters and retires the arq job (arq's own clean-up,
-- done here so that the result and the job's removal are one atomic step and one round trip), and
-- gives the worker's job slot back; for a cache leader, stores the answer and releases the lead.
-- Returns 1, or 0 if the request had already ended (the job is retired all the same).
-- KEYS: 1 record, 2 watchers, 3 queue, 4 arq_job, 5 in_progress, 6 retry, 7 room[, 8 cache_entry,
--   9 cache_lead]
-- ARGV: 1 stored (the outcome), 2 finished_ms, 3 record_ttl_s, 4 message (`<request id>|<stored>`),
--   5 status, 6 job_id (arq's), 7 cache_ttl_s, 8 worker, 9 handed_prefix (a hand-over ending before
--   its worker's next take leaves the worker's handed set here)
-- Builder: shared/scripts.py `finish`.

--! include publish_outcome
--! include batch_hook
--! include slot_back

redis.call('ZREM', KEYS[3], ARGV[6])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
slot_back(KEYS[7], ARGV[8])
if ARGV[8] ~= '' then redis.call('ZREM', ARGV[9] .. ARGV[8], ARGV[6]) end
if KEYS[9] then redis.call('DEL', KEYS[9]) end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'result', ARGV[1], 'finished', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[8] and ARGV[5] == 'succeeded' then
  redis.call('SET', KEYS[8], string.sub(ARGV[1], 3), 'EX', ARGV[7])
end
publish_outcome(KEYS[1], KEYS[2], ARGV[4])
batch_item_ended(KEYS[1], string.match(ARGV[4], '^[^|]*'), ARGV[1], ARGV[2], ARGV[3])
return 1
