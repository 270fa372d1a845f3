-- queue_admit_enqueue: the API's admission and enqueue of a new request in one step: the limits' draw
-- (lib/draw.lua), then, only if it says 'ok', the enqueue; refused, nothing is enqueued and nothing
-- taken. A job handed straight to a worker also takes its call's share of the provider's and global
-- buckets here (if they hold it now and no call waits for them in a worker's gate), sparing the
-- worker that draw. Returns the admission draw's answer.
-- First of all, the backlog: with more than `max_waiting` interactive jobs (synchronous and async)
-- due and unclaimed on the provider's queue (every worker's slots full: a claimed or handed-over
-- job's score is its lease's end, in the future), the request is refused before any draw, status
-- 'backlog' (the API answers 503 with Retry-After): a queue that only grows answers nobody in time,
-- and a full Redis refuses every write. Batch items are fed by the workers' feeders under a cap of
-- their own and are not counted.
-- On Redis Cluster this script needs one primary holding both the `{rl}` buckets and the queue keys,
-- as the queue itself does (arq's keys carry no hash tag; see README).
-- KEYS: the admission draw's n buckets, the call draw's m buckets, then queue_enqueue's 7 keys
-- ARGV: 1 n, 2 m, 3 max_waiting (0: no bound), 4 waiting_below (the highest score of a due
--   interactive job: `claim_bounds('interactive', now)`), then the admission draw's argv (5 + 4n),
--   the call draw's (5 + 4m), then queue_enqueue's argv
-- Builder: shared/scripts.py `admit_enqueue` (over `enqueue` and `draw`).

--! include draw
--! include enqueue

local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, c = 5 + 5 + 4 * n, 5 + 10 + 4 * (n + m)
local max_waiting = tonumber(ARGV[3])
if max_waiting > 0 and redis.call('ZCOUNT', KEYS[n + m + 3], '-inf', ARGV[4]) >= max_waiting then
  return {'backlog', 0, 0, 0, 0, 0}
end
local verdict = draw({unpack(KEYS, 1, n)}, {unpack(ARGV, 5, a - 1)})
if verdict[1] == 'ok' then
  local function prepay()
    for i = 8, #verdict, 2 do
      if verdict[i] > 0 then return false end
    end
    return draw({unpack(KEYS, n + 1, n + m)}, {unpack(ARGV, a, c - 1)})[1] == 'ok'
  end
  enqueue({unpack(KEYS, n + m + 1)}, {unpack(ARGV, c)}, prepay)
end
return verdict
