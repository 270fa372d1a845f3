-- queue_enqueue: a request's hop onto its provider's queue, or straight to a worker (see lib/enqueue.lua).
-- KEYS: 1 record, 2 arq_job, 3 queue, 4 wakers, 5 room, 6 in_progress, 7 retry
-- ARGV: 1 job_id, 2 job, 3 score, 4 job_ttl_ms, 5 record_ttl_s, 6 wake_channel, 7 requeue, 8 now_ms,
--   9 lease_ms, 10 worker_channel_prefix, 11 take_ms, 12 handed_prefix, 13 in_progress_prefix,
--   14 record_prefix, 15 record_suffix, 16.. fields (the record's field/value pairs)
-- Builder: shared/scripts.py `enqueue`.

--! include enqueue
return enqueue(KEYS, ARGV)
