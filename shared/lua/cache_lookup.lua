-- cache_lookup: the cached answer, or the lead for this request, or the leader to wait on.
-- KEYS: 1 entry, 2 lead
-- ARGV: 1 request_id, 2 lead_ttl_ms
-- Builder: shared/scripts.py `cache_lookup`.

local cached = redis.call('GET', KEYS[1])
if cached then return {'hit', cached} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead', ''} end
return {'follow', redis.call('GET', KEYS[2]) or ''}
