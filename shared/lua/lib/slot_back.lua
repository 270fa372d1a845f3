-- Fragment: slot_back(room, worker) gives a job slot back to the worker's room entry (while the
-- worker is in the room).

local function slot_back(room, worker)
  if worker ~= '' and redis.call('HEXISTS', room, worker) == 1 then redis.call('HINCRBY', room, worker, 1) end
end
