-- queue_take: a worker takes the jobs handed to it (see `evict` in lib/stall.lua), and keeps its room
-- entry true. Returns 1 (taken: run it) or 0 (gone: evicted or retaken, never to run here) per id.
-- The room entry is set from the truth, not adjusted: the worker's own count of its jobs, and the
-- hand-overs sent to it that it has not read yet (its handed set once these are taken). Every
-- increment and decrement elsewhere keeps it right between two beats; any drift (a slot given back
-- twice or never: crashes, retakes, lost messages) lasts until the next beat only.
-- KEYS: 1 room, 2 handed (the worker's handed set)
-- ARGV: 1 worker, 2 in_progress_prefix, 3 record_prefix, 4 record_suffix, 5 max_jobs ('' to leave the
--   room alone), 6 running (jobs running or waiting for a slot in the worker), 7 rejoin ('1': enter
--   the room if out of it, as after an eviction or a Redis restart), 8.. job_ids (to take)
-- Builder: shared/scripts.py `take`.

--! include slot_back

local room, handed = KEYS[1], KEYS[2]
local worker, in_progress_prefix, record_prefix, record_suffix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_jobs, running, rejoin = ARGV[5], ARGV[6], ARGV[7]
local out = {}
for i = 8, #ARGV do  -- the job ids
  local id = ARGV[i]
  local ours = 0
  local record = record_prefix .. string.match(id, '^(.*)%.%d+$') .. record_suffix
  local r = redis.call('HMGET', record, 'status', 'worker', 'job')
  local held = r[1] == 'running' and r[2] == worker and r[3] == id and redis.call('EXISTS', in_progress_prefix .. id) == 1
  if redis.call('ZREM', handed, id) == 1 then
    if held then
      ours = 1
    else
      slot_back(room, worker)  -- its slot, taken by the hand-over, is not used here after all
    end
  elseif held then
    ours = 1  -- taken already by the job itself (a stream's first relay: stream_relay.lua)
  end
  out[#out + 1] = ours
end
if max_jobs ~= '' and (rejoin == '1' or redis.call('HEXISTS', room, worker) == 1) then
  local free = tonumber(max_jobs) - tonumber(running) - redis.call('ZCARD', handed)
  redis.call('HSET', room, worker, math.max(free, 0))
end
return out
