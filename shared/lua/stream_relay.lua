-- stream_relay: appends a batch of a streamed request's deltas (entries `<seq>-0`, seq from
-- first_seq on) to its stream and, in the same step, publishes the batch to every API process that
-- follows the request (the record's reply channel and its watchers) as
-- `<request id>|S|<first_seq>|[<delta>,...]`: deltas that arrived together travel together.
-- Only the worker holding the request relays: after its lease lapsed and another worker retook the
-- job, a late relay changes nothing. The first relay also takes a handed-over job (as queue_take).
-- Returns 1; 0 when the request is not (or no longer) this worker's running request; -1 when its
-- client went away (`abandoned`): the worker stops the upstream call; -2 when the stream already
-- holds deltas of an earlier worker (it died mid-stream: what was sent cannot be sent again).
-- KEYS: 1 record, 2 stream, 3 watchers
-- ARGV: 1 worker, 2 first_seq, 3 ttl_s, 4 max_events, 5 message prefix (`<request id>|S|`),
--   6.. the deltas (each a JSON object)
-- Builder: shared/scripts.py `stream_relay`.

local r = redis.call('HMGET', KEYS[1], 'status', 'worker', 'abandoned', 'provider', 'job')
if r[1] ~= 'running' or r[2] ~= ARGV[1] then return 0 end
if r[3] then return -1 end
local seq = tonumber(ARGV[2])
if seq == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
  -- the first relay takes a handed-over job (queue_take's step, done here): a worker too busy to
  -- take it in time must not have it put back in the queue while it streams it
  local provider, worker = r[4], ARGV[1]
  redis.call('ZREM', ${handed(provider, worker)}, r[5])
end
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], (seq + i - 6) .. '-0', 'd', ARGV[i])
end
if seq == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
local message = ARGV[5] .. ARGV[2] .. '|[' .. table.concat(ARGV, ',', 6) .. ']'
local reply = redis.call('HGET', KEYS[1], 'reply')
if reply then redis.call('PUBLISH', reply, message) end
for _, ch in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('PUBLISH', ch, message) end
return 1
