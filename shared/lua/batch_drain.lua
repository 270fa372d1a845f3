-- batch_drain: ends up to `chunk` items of a cancelled or expired batch that no worker has started:
-- first the items never fed, then fed items still queued. Running items end on their own. The first
-- call marks the batch (status cancelling, or finalizing for an expiry). Returns the items still to
-- end here, 0 when only running items (if any) remain.
-- KEYS: 1 meta
-- ARGV: 1 batch_id, 2 reason (cancelled | expired), 3 now_ms, 4 chunk, 5 ttl_s, 6 error (JSON),
--   7 code (the outcome's: c | f), 8.. providers
-- Builder: shared/scripts.py `batch_drain`.

--! include publish_outcome
--! include batch_hook

local bid, reason, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local st = redis.call('HGET', KEYS[1], 'status')
if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'expired' or st == 'validating' then
  redis.call('SREM', ${batches_ending()}, bid)
  return 0
end
if not redis.call('HGET', KEYS[1], 'ending') then
  local status = reason == 'cancelled' and 'cancelling' or 'finalizing'
  redis.call('HSET', KEYS[1], 'ending', reason, 'status', status, status .. '_at', now)
  redis.call('SADD', ${batches_ending()}, bid)
end
local err = ARGV[6]
local left = tonumber(ARGV[4])
for i = 8, #ARGV do
  local pending = ${batch_pending(bid, ARGV[i])}
  while left > 0 do
    local entry = redis.call('LPOP', pending)
    if not entry then break end
    local rid, cid = string.match(entry, '^([^\t]*)\t[^\t]*\t([^\t]*)\t')
    batch_line(bid, '{"id":"' .. rid .. '","custom_id":' .. cid .. ',"response":null,"error":' .. err .. '}',
      false, 0, now, ttl)
    left = left - 1
  end
end
if left > 0 then
  local stored = ARGV[7] .. '|' .. err
  for _, rid in ipairs(redis.call('SMEMBERS', ${batch_fed(bid)})) do
    local record = ${request(rid)}
    local r = redis.call('HMGET', record, 'status', 'job', 'queue')
    if r[1] == 'queued' then
      redis.call('ZREM', r[3], r[2])
      redis.call('DEL', ${arq_job(r[2])})
      redis.call('HSET', record, 'status', ARGV[7] == 'c' and 'cancelled' or 'failed', 'result', stored,
        'finished', now)
      redis.call('EXPIRE', record, ttl)
      publish_outcome(record, ${watchers(rid)}, rid .. '|' .. stored)
      batch_item_ended(record, rid, stored, now, ttl)
    end
  end
end
local remaining = 0
for i = 8, #ARGV do
  remaining = remaining + redis.call('LLEN', ${batch_pending(bid, ARGV[i])})
end
if remaining == 0 then redis.call('SREM', ${batches_ending()}, bid) end
return remaining
