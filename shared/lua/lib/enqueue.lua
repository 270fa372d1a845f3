-- Fragment: enqueue(keys, argv[, prepay]), with wake_one and pick_worker. Includes lease_job and stall.
-- keys: 1 record, 2 arq job, 3 queue, 4 wakers (the provider's rotation of worker channels), 5 room
--   (live workers' free slots), 6 the job's arq in-progress key, 7 its arq retry key.
-- argv: 1 job id, 2 job (arq bytes), 3 score, 4 job ttl ms, 5 record ttl s, 6 wake channel (wakes
--   everyone), 7 requeue ('1': a hop of a request that may have ended), 8 now ms, 9 lease ms (0:
--   never hand the job to a worker), 10 the workers' channel prefix, 11 take ms, 12 handed prefix,
--   13 in-progress prefix, 14 record key prefix, 15 record key suffix, 16.. the record's field/value
--   pairs.
-- `prepay()`, if given, is asked just before a job is handed to a worker: true if it drew the call's
-- limits (the worker then needs no draw of its own).
-- Returns 0 (a requeue of a request that already ended: nothing written), 1 (queued, a worker woken)
-- or 2 (handed to a worker).

--! include lease_job
--! include stall

-- wake one worker, in turn (the list rotates), instead of every worker of the provider, all of
-- which would race to claim the one job; a channel nobody listens on any more (a dead worker) is
-- dropped, and with no worker left to ask, every worker is woken
local function wake_one(wakers, everyone)
  local n = redis.call('LLEN', wakers)
  for _ = 1, n do
    local ch = redis.call('LMOVE', wakers, wakers, 'LEFT', 'RIGHT')
    if redis.call('PUBLISH', ch, '1') > 0 then return end
    redis.call('LREM', wakers, 0, ch)
  end
  redis.call('PUBLISH', everyone, '1')
end

-- the live worker with the most free job slots, if one has any and no job that sorts before this
-- one (by priority, then age) waits in the queue: a job handed over must not overtake one that
-- waits, but a synchronous request need not wait behind a batch. On the way, every worker of the
-- room that leaves its hand-overs untaken (stalled) is evicted, its untaken jobs back in the queue
-- (which this job then must not overtake either), and so is a worker nobody listens for any more
-- (dead): the next hand-over after a worker stalls finds it, whoever it goes to
local function pick_worker(ctx, score, now)
  local swept = false
  while true do
    if redis.call('ZRANGEBYSCORE', ctx.queue, '-inf', score, 'LIMIT', 0, 1)[1] then return nil end
    local slots = redis.call('HGETALL', ctx.room)
    if not swept then
      swept = true
      local evicted = false
      for i = 1, #slots, 2 do
        if stalled(ctx, slots[i], now) then
          evict(ctx, slots[i])
          evicted = true
        end
      end
      if evicted then
        if redis.call('ZRANGEBYSCORE', ctx.queue, '-inf', score, 'LIMIT', 0, 1)[1] then return nil end
        slots = redis.call('HGETALL', ctx.room)
      end
    end
    local best, most = nil, 0
    for i = 1, #slots, 2 do
      local free = tonumber(slots[i + 1])
      if free > most then best, most = slots[i], free end
    end
    if not best then return nil end
    if redis.call('PUBSUB', 'NUMSUB', ctx.channel .. best)[2] > 0 then return best end
    evict(ctx, best)
  end
end

local function enqueue(keys, argv, prepay)
  if argv[7] == '1' then
    local st = redis.call('HGET', keys[1], 'status')
    if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
  end
  redis.call('SET', keys[2], argv[2], 'PX', argv[4])
  redis.call('HSET', keys[1], unpack(argv, 16))
  redis.call('EXPIRE', keys[1], argv[5])
  local lease = tonumber(argv[9])
  local ctx = {
    queue = keys[3], room = keys[5], wakers = keys[4], channel = argv[10], take_ms = tonumber(argv[11]),
    handed = argv[12], in_progress = argv[13], record_prefix = argv[14], record_suffix = argv[15],
  }
  local now = lease > 0 and redis_ms()
  local worker = lease > 0 and pick_worker(ctx, argv[3], now)
  if not worker then
    redis.call('ZADD', keys[3], argv[3], argv[1])
    wake_one(keys[4], argv[6])
    return 1
  end
  -- handed over: claimed on the worker's behalf, as the claim script would, and sent on its channel
  -- with the hand-over's time (the worker runs a hand-over that old only if it is still its own)
  local prepaid = prepay ~= nil and prepay()
  local tries = lease_job(keys[3], argv[1], keys[6], keys[7], argv[8], lease, argv[3])
  redis.call('HSET', keys[1], 'status', 'running', 'started', argv[8], 'worker', worker)
  redis.call('HINCRBY', keys[5], worker, -1)
  local handed = argv[12] .. worker
  redis.call('ZADD', handed, now, argv[1])
  redis.call('PEXPIRE', handed, lease * 3)  -- a dead worker's set goes (its leases lapse anyway)
  local message = table.concat({argv[1], argv[3], tries, prepaid and '1' or '0', now, argv[2]}, '|')
  redis.call('PUBLISH', argv[10] .. worker, message)
  return 2
end
