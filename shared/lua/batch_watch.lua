-- batch_watch: registers a long-poll on a batch and reads its status at once.
-- KEYS: 1 watchers, 2 meta
-- ARGV: 1 channel, 2 ttl_s
-- Builder: shared/scripts.py `batch_watch`.

redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGET', KEYS[2], 'status')
