-- queue_slot_back: a job ended without an outcome of its own (skipped, failed over, handed back to
-- the queue): its slot is free again, and, handed over, it is no longer the worker's to take (left
-- there, it would make the worker look stalled).
-- KEYS: 1 room[, 2 handed (the worker's handed set)]
-- ARGV: 1 worker[, 2 job_id]
-- Builder: shared/scripts.py `slot_back`.

--! include slot_back

slot_back(KEYS[1], ARGV[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
