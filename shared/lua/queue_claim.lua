-- queue_claim: claims up to N due jobs of a queue in one round trip, where arq would WATCH/MULTI per
-- job: sets arq's in-progress key (a lease the worker renews) and marks each job's request running.
-- A claimed job stays in the queue, as arq wants, but its score moves to the lease's end (the
-- worker's heartbeat keeps moving it): the next claim's scan sees only unclaimed jobs, and a dead
-- worker's job comes due again exactly when its lease lapses. It returns with its original score
-- from the claim. It also does arq's per-job read (the job itself) and try count, so running a job
-- costs no more round trips than the claim. The claimed jobs take their slots in the worker's room
-- entry (see lib/enqueue.lua).
-- First, the jobs handed to a stalled or dead worker of the room go back to the queue and the worker
-- leaves the room (see `evict`): claims come often under load, and at least twice per
-- WORKER_HANDOVER_TAKE_S from an idle worker.
-- KEYS: 1 queue, 2 room
-- ARGV: 1 now_ms, 2 limit (max to claim), 3 lease_ms, 4 scan (how far to scan), 5 in_progress_prefix,
--   6 record_prefix, 7 record_suffix, 8 worker, 9 job_prefix (arq's), 10 retry_prefix (arq's),
--   11 lowest and 12 highest score to claim (the kinds of jobs the worker takes: `claim_bounds`),
--   13 wakers, 14 worker_channel_prefix, 15 handed_prefix, 16 take_ms
-- Returns id, score, verdict, job (false if expired), try: five per job. A verdict other than 'ok'
-- (cancelled, stale hop, already finished) means the job must not call a provider.
-- Builder: shared/scripts.py `claim`.

--! include lease_job
--! include stall

local ctx = {
  queue = KEYS[1], room = KEYS[2], wakers = ARGV[13], channel = ARGV[14], handed = ARGV[15],
  take_ms = tonumber(ARGV[16]), in_progress = ARGV[5], record_prefix = ARGV[6], record_suffix = ARGV[7],
}
local now = redis_ms()
for _, worker in ipairs(redis.call('HKEYS', KEYS[2])) do
  if worker ~= ARGV[8] then
    -- stalled, or dead (nobody listens on its channel): a dead worker that is never the one with the
    -- most free slots would otherwise stay in the room for good
    if stalled(ctx, worker, now) or redis.call('PUBSUB', 'NUMSUB', ctx.channel .. worker)[2] == 0 then
      evict(ctx, worker)
    end
  end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[11], ARGV[12], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local out = {}
local want = tonumber(ARGV[2])
for i = 1, #ids, 2 do
  local id = ids[i]
  local lease = ARGV[5] .. id
  if redis.call('EXISTS', lease) == 0 then
    local tries = lease_job(KEYS[1], id, lease, ARGV[10] .. id, ARGV[1], ARGV[3], '1')
    local record = ARGV[6] .. string.match(id, '^(.*)%.%d+$') .. ARGV[7]
    local st = redis.call('HGET', record, 'status')
    local verdict = st or 'missing'
    if st == 'queued' or st == 'running' then
      if redis.call('HGET', record, 'job') == id then
        redis.call('HSET', record, 'status', 'running', 'started', ARGV[1], 'worker', ARGV[8])
        verdict = 'ok'
      else
        verdict = 'stale'
      end
    end
    out[#out + 1] = id
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = verdict
    out[#out + 1] = redis.call('GET', ARGV[9] .. id)
    out[#out + 1] = tries
    if #out >= 5 * want then break end
  end
end
if #out > 0 and redis.call('HEXISTS', KEYS[2], ARGV[8]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[8], -#out / 5)
end
return out
