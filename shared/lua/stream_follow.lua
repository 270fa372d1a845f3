-- stream_follow: a client starts (or resumes) following a request's stream. In one step it checks
-- the tenant, registers the API process's channel as a watcher (so the deltas relayed from now on
-- and the outcome reach it), counts the client among the request's followers, and reads what the
-- stream holds after `after_seq` with the record's status: nothing can fall between the read and
-- the live deltas (the API drops those it already has by their seq).
-- Another tenant's request reads as missing, as one that does not exist.
-- Returns {false} when missing; else {status, result (or false), streamed ('1' or false),
--   kind, first retained seq (0: none), last seq (0: none), entries (XRANGE's reply), model, created}.
-- KEYS: 1 record, 2 stream, 3 watchers
-- ARGV: 1 channel, 2 watch_ttl_s, 3 tenant ('': any tenant's), 4 after_seq, 5 count ('1': the
--   client counts as a follower: its going away may abandon the stream)
-- Builder: shared/scripts.py `stream_follow`.

local r = redis.call('HMGET', KEYS[1], 'status', 'result', 'tenant', 'stream', 'kind', 'model', 'created')
if not r[1] or (ARGV[3] ~= '' and r[3] ~= ARGV[3]) then return {false} end
local st = r[1]
if st ~= 'succeeded' and st ~= 'failed' and st ~= 'cancelled' then
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
  if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'followers', 1) end
end
local function seq_of(entries)
  if #entries == 0 then return 0 end
  return tonumber(string.match(entries[1][1], '^(%d+)'))
end
local first = seq_of(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1))
local last = seq_of(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1))
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[4] .. '-0', '+')
return {st, r[2] or false, r[4] or false, r[5] or false, first, last, entries, r[6] or false, r[7] or false}
