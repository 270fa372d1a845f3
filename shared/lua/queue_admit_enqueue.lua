-- queue_admit_enqueue: the API's admission and enqueue of a new request in one step: the limits' draw
-- (lib/draw.lua), then, only if it says 'ok', the enqueue; refused, nothing is enqueued and nothing
-- taken. A job handed straight to a worker also takes its call's share of the provider's and global
-- buckets here (if they hold it now and no call waits for them in a worker's gate), sparing the
-- worker that draw. Returns the admission draw's answer.
-- On Redis Cluster this script needs one primary holding both the `{rl}` buckets and the queue keys,
-- as the queue itself does (arq's keys carry no hash tag; see README).
-- KEYS: the admission draw's n buckets, the call draw's m buckets, then queue_enqueue's 7 keys
-- ARGV: 1 n, 2 m, then the admission draw's argv (5 + 4n), the call draw's (5 + 4m), then
--   queue_enqueue's argv
-- Builder: shared/scripts.py `admit_enqueue` (over `enqueue` and `draw`).

--! include draw
--! include enqueue

local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, c = 3 + 5 + 4 * n, 3 + 10 + 4 * (n + m)
local verdict = draw({unpack(KEYS, 1, n)}, {unpack(ARGV, 3, a - 1)})
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
