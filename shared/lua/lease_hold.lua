-- lease_hold: takes a free lease or renews our own; 1 if we hold it.
-- KEYS: 1 lease
-- ARGV: 1 token, 2 ttl_ms
-- Builder: shared/scripts.py `lease_hold`.

local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
