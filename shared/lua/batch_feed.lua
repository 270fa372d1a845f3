-- batch_feed: moves up to min(max move, cap - in flight) items into a provider's arq queue, one per
-- turn of the tenant ring (then of that tenant's batch ring): tenants share the queue round-robin
-- whatever the size of their batches. Exhausted or ending batches leave the rings as they are met.
-- Below `min move` free places nothing moves: refills come in batches, not one call per finished job.
-- Returns how many moved.
-- KEYS: 1 tenant_ring, 2 inflight (counter), 3 queue (arq's)
-- ARGV: 1 cap, 2 max_move, 3 now_ms, 4 job_ttl_ms, 5 record_ttl_s, 6 provider, 7 wake_channel,
--   8 min_move
-- Builder: shared/scripts.py `batch_feed`.

local budget = tonumber(ARGV[1]) - tonumber(redis.call('GET', KEYS[2]) or '0')
if budget > tonumber(ARGV[2]) then budget = tonumber(ARGV[2]) end
if budget <= 0 or budget < tonumber(ARGV[8]) then return 0 end
local p = ARGV[6]
local base = tonumber(ARGV[3]) - 1
local moved = 0
while moved < budget do
  local tenant = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not tenant then break end
  local tring = ${feed_tenant_batches(p, tenant)}
  local bid = redis.call('LMOVE', tring, tring, 'LEFT', 'RIGHT')
  local entry = false
  if bid then
    if redis.call('HGET', ${batch(bid)}, 'status') == 'in_progress' then
      entry = redis.call('LPOP', ${batch_pending(bid, p)})
    end
    if not entry then redis.call('LREM', tring, 0, bid) end
  end
  if entry then
    local rid, model, cid, job = string.match(entry, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
    local jid = rid .. '.0'
    redis.call('SET', ${arq_job(jid)}, job, 'PX', ARGV[4])
    -- fractions of a ms keep the round-robin order inside one feed, still all in the past
    redis.call('ZADD', KEYS[3], string.format('%.3f', base + moved / 1000), jid)
    local record = ${request(rid)}
    redis.call('HSET', record, 'status', 'queued', 'provider', p, 'model', model, 'job', jid, 'queue', KEYS[3],
      'hop', 0, 'created', ARGV[3], 'kind', 'batch', 'tenant', tenant, 'batch', bid, 'cid', cid, 'feed', p)
    redis.call('EXPIRE', record, ARGV[5])
    redis.call('SADD', ${batch_fed(bid)}, rid)
    moved = moved + 1
  elseif redis.call('LLEN', tring) == 0 then
    redis.call('LREM', KEYS[1], 0, tenant)
  end
end
if moved > 0 then
  redis.call('INCRBY', KEYS[2], moved)
  redis.call('PUBLISH', ARGV[7], '1')
end
return moved
