-- batch_activate: makes a fully staged batch visible to the feeders.
-- KEYS: 1 meta, 2 deadlines, 3 tenant_batches (the tenant's batch index)
-- ARGV: 1 batch_id, 2 tenant, 3 now_ms, 4 expires_ms, 5 total, 6 ttl_s (of its keys), 7 format,
--   8.. providers (those that have items)
-- Builder: shared/scripts.py `batch_activate`.

local bid, tenant = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], 'status') ~= 'validating' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'in_progress_at', ARGV[3], 'expires_at', ARGV[4],
  'total', ARGV[5], 'completed', 0, 'failed', 0, 'format', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', ${batch_results(bid)}, ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], bid)
redis.call('ZADD', KEYS[3], ARGV[3], bid)
for i = 8, #ARGV do
  local p = ARGV[i]
  redis.call('EXPIRE', ${batch_pending(bid, p)}, ARGV[6])
  redis.call('RPUSH', ${feed_tenant_batches(p, tenant)}, bid)
  local ring = ${feed_tenants(p)}
  if not redis.call('LPOS', ring, tenant) then redis.call('RPUSH', ring, tenant) end
  redis.call('PUBLISH', ${feed_channel(p)}, bid)
end
return 1
