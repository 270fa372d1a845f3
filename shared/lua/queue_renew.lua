-- queue_renew: a worker's lease heartbeat (and its lease check before a provider call), fenced. For
-- each job it runs, the lease is renewed only if the worker still holds the job (lib/holder.lua):
-- arq's in-progress key is kept (set again, with the job's queue score as a hand-over's lease holds
-- it, if it lapsed while nobody retook the job) and the job's score moves to the lease's end. A
-- job another worker retook is left alone: a bare PEXPIRE would renew that worker's lease, and tell
-- this one it still held the job.
-- KEYS: 1 queue
-- ARGV: 1 worker, 2 lease_ms, 3 until (the score: the lease's end, ms), 4 in_progress_prefix,
--   5 record_prefix, 6 record_suffix, then per job: its id and its queue score
-- Returns holder()'s verdict per job: 1 held (renewed), 0 over, -1 fenced.
-- Builder: shared/scripts.py `renew`.

--! include holder

local worker, lease_ms, until_ms = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 7, #ARGV, 2 do
  local id = ARGV[i]
  local held = holder(ARGV[5] .. string.match(id, '^(.*)%.%d+$') .. ARGV[6], id, worker)
  if held == 1 then
    local lease = ARGV[4] .. id
    if redis.call('PEXPIRE', lease, lease_ms) == 0 then redis.call('SET', lease, ARGV[i + 1], 'PX', lease_ms) end
    redis.call('ZADD', KEYS[1], 'XX', until_ms, id)
  end
  out[#out + 1] = held
end
return out
