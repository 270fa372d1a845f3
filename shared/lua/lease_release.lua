-- lease_release: deletes a lease (a worker lease, a cache lead) only if this holder still holds it.
-- Returns 1 if deleted, else 0.
-- KEYS: 1 lease
-- ARGV: 1 token
-- Builder: shared/scripts.py `lease_release`.

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
