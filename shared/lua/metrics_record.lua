-- metrics_record: the request counters of one or more requests, in one call (shared/metrics.py).
-- The admitted models' hash holds `<provider>|<model>` -> 1 and `#<provider>` -> how many; it never
-- expires (nor do the totals). Each tenant's models take the labels the gateway's groups got (every
-- tenant's record is one of the gateway's too).
-- KEYS: 1 minute (bucket), 2 hour (bucket), 3 totals, 4 models (admitted), then per tenant its minute
--   and hour buckets
-- ARGV: 1 minute_ttl_s, 2 hour_ttl_s, 3 increments (a JSON array of field/increment pairs: one
--   argument instead of dozens, since packing each argument is what costs the client CPU),
--   4 max_models (admitted per provider), 5 groups (a JSON array of the counters of models outside
--   the known catalogue: [provider, model, admit, kind, suffix, increment, kind, suffix, increment,
--   ...] each, counted under `kind|provider|model<suffix>` if the model is (or, with admit = 1 and
--   room under the cap, becomes) admitted, else under `kind|provider|other<suffix>`), then per tenant
--   one JSON array [field/increment pairs, groups as above without `admit`, its cost field, its cost],
--   the cost also counted in the gateway's minute and hour buckets (not the totals)
-- Builder: shared/scripts.py `metrics_record`.

local function add(field, by)
  redis.call('HINCRBY', KEYS[1], field, by)
  redis.call('HINCRBY', KEYS[2], field, by)
  redis.call('HINCRBY', KEYS[3], field, by)
end
local incr = cjson.decode(ARGV[3])
for i = 1, #incr, 2 do
  add(incr[i], incr[i + 1])
end
local cap = tonumber(ARGV[4])
local groups = cjson.decode(ARGV[5])
local labels = {}
for g = 1, #groups do
  local grp = groups[g]
  local p, label = grp[1], grp[2]
  if redis.call('HEXISTS', KEYS[4], p .. '|' .. label) == 0 then
    if grp[3] == 1 and tonumber(redis.call('HGET', KEYS[4], '#' .. p) or '0') < cap then
      redis.call('HSET', KEYS[4], p .. '|' .. label, 1)
      redis.call('HINCRBY', KEYS[4], '#' .. p, 1)
    else
      label = 'other'
    end
  end
  labels[p .. '|' .. grp[2]] = label
  for i = 4, #grp, 3 do
    add(grp[i] .. '|' .. p .. '|' .. label .. grp[i + 1], grp[i + 2])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for t = 1, (#KEYS - 4) / 2 do
  local minute, hour = KEYS[3 + 2 * t], KEYS[4 + 2 * t]
  local mine = cjson.decode(ARGV[5 + t])
  local function tadd(field, by)
    redis.call('HINCRBY', minute, field, by)
    redis.call('HINCRBY', hour, field, by)
  end
  local flat, tgroups = mine[1], mine[2]
  if mine[4] and mine[4] ~= '0' then
    redis.call('HINCRBY', KEYS[1], mine[3], mine[4])
    redis.call('HINCRBY', KEYS[2], mine[3], mine[4])
  end
  for i = 1, #flat, 2 do
    tadd(flat[i], flat[i + 1])
  end
  for g = 1, #tgroups do
    local grp = tgroups[g]
    local p = grp[1]
    local label = labels[p .. '|' .. grp[2]]
    for i = 3, #grp, 3 do
      tadd(grp[i] .. '|' .. p .. '|' .. label .. grp[i + 1], grp[i + 2])
    end
  end
  redis.call('EXPIRE', minute, ARGV[1])
  redis.call('EXPIRE', hour, ARGV[2])
end
return 1
