-- Fragment: publish_outcome(record, watchers, message) publishes a stored outcome to the request's
-- own waiter (the record's `reply` channel) and to every long-poll watching it, then drops the
-- watchers set. Included by queue_finish, queue_cancel, queue_notify and batch_drain.

local function publish_outcome(record, watchers, message)
  local reply = redis.call('HGET', record, 'reply')
  if reply then redis.call('PUBLISH', reply, message) end
  for _, ch in ipairs(redis.call('SMEMBERS', watchers)) do redis.call('PUBLISH', ch, message) end
  redis.call('DEL', watchers)
end
