-- Fragment: draw(keys, argv), the limits' token buckets (shared/limits.py), a function so that
-- other scripts can draw in the same step (queue_admit_enqueue).
-- keys: the buckets.
-- argv: 1 max take wait ms, 2 max peek wait ms, 3 gate id ('' = none), 4 calls the gate holds (the
--   asker included), 5 report grace ms, then per bucket: rate per ms, capacity, cost, mode.
-- Returns: status, take wait ms, its bucket (1-based, 0 = none), peek wait ms, its bucket, now ms,
-- then per bucket: level after (floored) and waiters ahead.

local function draw(keys, argv)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local take_max, peek_max = tonumber(argv[1]), tonumber(argv[2])
  local gate, holding, grace = argv[3], tonumber(argv[4]), tonumber(argv[5])
  local n = #keys
  local rate, cap, cost, mode, level, ahead = {}, {}, {}, {}, {}, {}
  local take_wait, take_at, peek_wait, peek_at = 0, 0, 0, 0
  for i = 1, n do
    local a = 5 + (i - 1) * 4
    rate[i], cap[i], cost[i], mode[i] = tonumber(argv[a + 1]), tonumber(argv[a + 2]), tonumber(argv[a + 3]), argv[a + 4]
    local st = redis.call('HMGET', keys[i], 'v', 't')
    local v = cap[i]
    if st[1] and st[2] then
      v = math.min(cap[i], tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate[i])
    end
    level[i] = v
    ahead[i] = 0
    if mode[i] == 'pw' then
      local h = redis.call('HGETALL', keys[i])
      for j = 1, #h, 2 do
        if string.sub(h[j], 1, 2) == 'w:' then
          local c, e = string.match(h[j + 1], '^(%d+):(%d+)$')
          if c and tonumber(e) > now then ahead[i] = ahead[i] + tonumber(c) end
        end
      end
    end
    if mode[i] == 't' or mode[i] == 'tw' then
      local w = (math.min(cost[i], cap[i]) - v) / rate[i]
      if w > take_wait then take_wait, take_at = w, i end
    else
      local w = (ahead[i] + math.min(cost[i], cap[i]) - v) / rate[i]
      if w > peek_wait then peek_wait, peek_at = w, i end
    end
  end
  local status = 'ok'
  if take_wait > take_max then status = 'take' elseif peek_wait > peek_max then status = 'peek' end
  -- the gate asks again (or its next call asks) once this wait is over: its count holds until then
  local still = holding
  local report_until = now + grace + take_wait
  if status == 'ok' then still = holding - 1 end
  for i = 1, n do
    local taking = status == 'ok' and (mode[i] == 't' or mode[i] == 'tw')
    local reporting = mode[i] == 'tw' and gate ~= ''
    if taking then
      level[i] = math.min(cap[i], level[i] - cost[i])
      redis.call('HSET', keys[i], 'v', string.format('%.17g', level[i]), 't', string.format('%.17g', now))
    end
    if reporting then
      if still > 0 then
        redis.call('HSET', keys[i], 'w:' .. gate, string.format('%d:%d', still, math.ceil(report_until)))
      else
        redis.call('HDEL', keys[i], 'w:' .. gate)
      end
    end
    if taking or reporting then
      -- keep the key until it would be full again and its waiter counts are stale; only ever extend
      local stale = 0
      if reporting then stale = report_until - now end
      local keep = math.ceil(math.max((cap[i] - level[i]) / rate[i], stale)) + 1000
      -- GT leaves a longer expiry alone, and also a key without one (PTTL -1), which gets it then;
      -- a take always extends, so it costs one call
      if redis.call('PEXPIRE', keys[i], keep, 'GT') == 0 and redis.call('PTTL', keys[i]) == -1 then
        redis.call('PEXPIRE', keys[i], keep)
      end
    end
  end
  local out = {status, math.ceil(take_wait), take_at, math.ceil(peek_wait), peek_at, math.floor(now)}
  for i = 1, n do
    out[#out + 1] = math.floor(level[i])
    out[#out + 1] = ahead[i]
  end
  return out
end
