-- Fragment: batch_line and batch_item_ended. A batch item's end, in the same script that ends its
-- request: append its one result line and count it, atomically, so every request of a batch ends
-- in exactly one line whatever crashes. The batch is done when its lines reach its total; long-polls
-- on the batch are then signalled. Non-batch requests pay one HMGET. `outcome` is the stored
-- `<code>|<json>`. Included by queue_finish, queue_cancel and batch_drain.

local function batch_line(bid, line, ok, cost, now, ttl)
  local meta = ${batch(bid)}
  local results = ${batch_results(bid)}
  redis.call('RPUSH', results, line)
  redis.call('HINCRBY', meta, ok and 'completed' or 'failed', 1)
  if cost > 0 then redis.call('HINCRBYFLOAT', meta, 'cost', cost) end
  local m = redis.call('HMGET', meta, 'total', 'completed', 'failed', 'ending')
  if not m[1] or (tonumber(m[2]) or 0) + (tonumber(m[3]) or 0) < tonumber(m[1]) then return end
  local final = m[4] or 'completed'
  redis.call('HSET', meta, 'status', final, final .. '_at', now)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', results, ttl)
  redis.call('ZREM', ${batch_deadlines()}, bid)
  redis.call('SREM', ${batches_ending()}, bid)
  local watchers = ${batch_watchers(bid)}
  for _, ch in ipairs(redis.call('SMEMBERS', watchers)) do redis.call('PUBLISH', ch, bid .. '|s|{}') end
  redis.call('DEL', watchers)
end

local function batch_item_ended(record, rid, outcome, now, ttl)
  local f = redis.call('HMGET', record, 'batch', 'cid', 'feed')
  if not f[1] then return end
  local bid = f[1]
  local ok = string.sub(outcome, 1, 1) == 's'
  local body = string.sub(outcome, 3)
  local head = '{"id":"' .. rid .. '","custom_id":' .. f[2]
  local line
  local cost = 0
  if ok then
    line = head .. ',"response":{"status_code":200,"request_id":"' .. rid .. '","body":' .. body .. '},"error":null}'
    -- the one unescaped "totalCost" key of the body (a quote inside a string is escaped): no decode
    cost = tonumber(string.match(body, '"totalCost":([-+.%deE]+)')) or 0
  else
    line = head .. ',"response":null,"error":' .. body .. '}'
  end
  redis.call('SREM', ${batch_fed(bid)}, rid)
  if f[3] then
    local inflight = ${feed_inflight(f[3])}
    if redis.call('DECR', inflight) < 0 then redis.call('SET', inflight, 0) end
  end
  batch_line(bid, line, ok, cost, now, ttl)
end
