-- Fragment: holder(record, job_id, worker), the fencing check. A job's request record names the job
-- of its current hop (`job`) and, while it runs, the worker holding it (`worker`): every claim and
-- hand-over writes both in the same step as the job's lease, so the record is the fencing token a
-- worker's late writes are checked against (worker ids are unique per process, and a process runs a
-- job id at most once at a time: see GatewayWorker._poll_iteration). Returns
--   1  `worker` holds the job: it may renew its lease, store its outcome, hand it back;
--   0  the job is over (its request ended, or moved on to another hop, or the record is gone): no
--      one holds it, its keys may go;
--  -1  fenced: the job is another worker's now (retaken after this worker's lease lapsed), or back
--      in the queue for one (taken back from a stalled worker): nothing of it is this worker's.

local function holder(record, job_id, worker)
  local r = redis.call('HMGET', record, 'status', 'worker', 'job')
  if r[3] ~= job_id or (r[1] ~= 'running' and r[1] ~= 'queued') then return 0 end
  if r[1] == 'running' and r[2] == worker then return 1 end
  return -1
end
