-- Fragment: record_of, evict, redis_ms, stalled.
-- A worker that does not take what it was handed (stopped: SIGSTOP, a stalled host) must not keep
-- receiving hand-overs while its pub/sub socket stays open. Each hand-over is noted in the worker's
-- `handed` set (job id -> hand-over ms); the worker takes it (removes it) within a fraction of
-- WORKER_HANDOVER_TAKE_S (queue_take.lua), or by ending the job. A worker whose oldest untaken
-- hand-over is older than that is stalled: `evict` puts those jobs back in the queue at their own
-- scores (kept in their leases), still marked for nobody, and drops the worker from the room and the
-- wake rotation; it rejoins with its true free slots when it beats again (queue_take.lua). When it
-- wakes, a hand-over it finds gone from its set is not run (one execution).
-- `ctx` fields: queue, room, wakers, handed (prefix), in_progress (prefix), record_prefix,
-- record_suffix, channel (the workers' channel prefix), take_ms.

local function record_of(ctx, id)
  return ctx.record_prefix .. string.match(id, '^(.*)%.%d+$') .. ctx.record_suffix
end

local function evict(ctx, worker)
  local handed = ctx.handed .. worker
  local requeued = 0
  for _, id in ipairs(redis.call('ZRANGE', handed, 0, -1)) do
    local record = record_of(ctx, id)
    local r = redis.call('HMGET', record, 'status', 'worker', 'job')
    if r[1] == 'running' and r[2] == worker and r[3] == id then
      local lease = ctx.in_progress .. id
      local score = tonumber(redis.call('GET', lease))
      redis.call('DEL', lease)
      if score then redis.call('ZADD', ctx.queue, 'XX', score, id) end
      redis.call('HSET', record, 'status', 'queued')
      redis.call('HDEL', record, 'worker', 'started')
      requeued = requeued + 1
    end
  end
  redis.call('DEL', handed)
  redis.call('HDEL', ctx.room, worker)
  redis.call('LREM', ctx.wakers, 0, ctx.channel .. worker)
  -- a live worker that takes these jobs' kind claims them now (the claimer may take only batches)
  for _ = 1, requeued > 0 and redis.call('LLEN', ctx.wakers) or 0 do
    if redis.call('PUBLISH', redis.call('LMOVE', ctx.wakers, ctx.wakers, 'LEFT', 'RIGHT'), '1') > 0 then break end
  end
end

-- Redis's own clock (ms): hand-overs are stamped and judged by it, so the API processes' and the
-- workers' clocks, wherever they run, never decide that a worker stalled
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function stalled(ctx, worker, now)
  local oldest = redis.call('ZRANGE', ctx.handed .. worker, 0, 0, 'WITHSCORES')[2]
  return oldest ~= nil and tonumber(oldest) + ctx.take_ms < now
end
