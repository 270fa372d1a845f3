-- Fragment: lease_job(queue, id, in_progress, retry, now, lease_ms, held). A job taken by a worker
-- (claimed, or handed over by an enqueue): arq's in-progress key leases it, its score moves to the
-- lease's end (the next claim's scan skips it; a dead worker's job comes due again when the lease
-- lapses), and its try is counted in arq's retry key. Returns the try. The lease holds `held` (arq
-- only asks whether it exists): a hand-over keeps the job's queue score there, so a hand-over the
-- worker never takes goes back to its own place in the queue (`evict`).

local function lease_job(queue, id, in_progress, retry, now, lease_ms, held)
  redis.call('SET', in_progress, held, 'PX', lease_ms)
  redis.call('ZADD', queue, tonumber(now) + tonumber(lease_ms), id)
  local tries = redis.call('INCR', retry)
  redis.call('EXPIRE', retry, 88400)
  return tries
end
