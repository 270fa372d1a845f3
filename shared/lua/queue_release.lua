-- queue_release: a job ends here without an outcome of its own: retired (skipped because its
-- request had ended, failed over, fenced) or handed back to the queue (its worker stops, or lost
-- Redis mid-job; due again at once in its old place, `score`, its lease dropped so that any worker
-- claims it). Either way its slot is given back and it leaves the worker's handed set. Fenced
-- (lib/holder.lua: another worker holds the job now) nothing else is touched: retiring or handing
-- back would drop that worker's lease and let a third one run the job.
-- KEYS: 1 record, 2 queue, 3 arq_job, 4 in_progress, 5 retry, 6 aborts (arq's), 7 room, 8 handed
-- ARGV: 1 job_id, 2 worker, 3 mode ('retire' or 'back'), 4 score (for 'back')
-- Returns holder()'s verdict: 1, 0, or -1 (fenced: only the slot given back).
-- Builder: shared/scripts.py `release`.

--! include slot_back
--! include holder

local job_id, worker = ARGV[1], ARGV[2]
slot_back(KEYS[7], worker)
redis.call('ZREM', KEYS[8], job_id)
local held = holder(KEYS[1], job_id, worker)
if held == -1 then return -1 end
if ARGV[3] == 'retire' then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('ZREM', KEYS[6], job_id)
  redis.call('ZREM', KEYS[2], job_id)
else
  redis.call('ZADD', KEYS[2], 'XX', ARGV[4], job_id)
  redis.call('DEL', KEYS[4])
end
return held
