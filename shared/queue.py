"""The queue contract: enqueue a request, claim it in a worker, store its outcome, wait for it.

A request has one record (a Redis hash) and, at any time, one arq job on one provider's queue.
Failover re-enqueues the same request as a new job ("hop") on another queue; waiters wait on the
request, never on a job, so a hop is invisible to them.

Latency matters here, so every step is one round trip:
- enqueue writes the record and the arq job, adds it to the queue and wakes idle workers; the API's
  enqueue of a new request runs its limits admission in the same script (`enqueue_if_admitted`);
- finish stores the outcome and publishes it to the waiting API process in the same script;
- the outcome travels as bytes ``<code>|<json>`` that the API splices into its answer unparsed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from arq.jobs import serialize_job
from redis.asyncio import Redis

from plumbing.interfaces import ScriptRunner, Trip
from shared import keys
from shared.limits import DRAW_FN, DrawCall, Verdict, verdict_of
from shared.schemas import JobPayload
from shared.settings import JobKinds, Settings

JOB_FUNCTION = "llm_request"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CODE_TO_STATUS = {"s": "succeeded", "f": "failed", "c": "cancelled"}
STATUS_TO_CODE = {v: k for k, v in CODE_TO_STATUS.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A terminal outcome as stored: status and the JSON of the result data or the error."""

    status: str
    body: bytes

    @classmethod
    def parse(cls, stored: bytes) -> Outcome:
        code, _, body = stored.partition(b"|")
        return cls(CODE_TO_STATUS[code.decode()], body)

    def encode(self) -> bytes:
        return STATUS_TO_CODE[self.status].encode() + b"|" + self.body

    def json(self) -> Any:
        return orjson.loads(self.body)


# Publishes a stored outcome to the request's own waiter and to every long-poll watching it.
_PUBLISH = """
local function publish_outcome(record, watchers, message)
  local reply = redis.call('HGET', record, 'reply')
  if reply then redis.call('PUBLISH', reply, message) end
  for _, ch in ipairs(redis.call('SMEMBERS', watchers)) do redis.call('PUBLISH', ch, message) end
  redis.call('DEL', watchers)
end
"""

# A job taken by a worker (claimed, or handed over by an enqueue): arq's in-progress key leases it,
# its score moves to the lease's end (the next claim's scan skips it; a dead worker's job comes due
# again when the lease lapses), and its try is counted in arq's retry key. Returns the try. The lease
# holds `held` (arq only asks whether it exists): a hand-over keeps the job's queue score there, so a
# hand-over the worker never takes goes back to its own place in the queue (`evict`).
_LEASE_FN = """
local function lease_job(queue, id, in_progress, retry, now, lease_ms, held)
  redis.call('SET', in_progress, held, 'PX', lease_ms)
  redis.call('ZADD', queue, tonumber(now) + tonumber(lease_ms), id)
  local tries = redis.call('INCR', retry)
  redis.call('EXPIRE', retry, 88400)
  return tries
end
"""

# A worker that does not take what it was handed (stopped: SIGSTOP, a stalled host) must not keep
# receiving hand-overs while its pub/sub socket stays open. Each hand-over is noted in the worker's
# `handed` set (job id -> hand-over ms); the worker takes it (removes it) within a fraction of
# WORKER_HANDOVER_TAKE_S (`TAKE_LUA`), or by ending the job. A worker whose oldest untaken hand-over
# is older than that is stalled: `evict` puts those jobs back in the queue at their own scores (kept
# in their leases), still marked for nobody, and drops the worker from the room and the wake
# rotation; it rejoins with its true free slots when it beats again (`TAKE_LUA`). When it wakes, a
# hand-over it finds gone from its set is not run (one execution). `ctx`: queue, room, wakers,
# handed prefix, in-progress prefix, record prefix and suffix, worker channel prefix, take ms.
_STALL_FN = """
local function record_of(ctx, id)
  return ctx.record_prefix .. string.match(id, '^(.*)%.%d+$') .. ctx.record_suffix
end

local function evict(ctx, worker)
  local handed = ctx.handed .. worker
  local requeued = 0
  for _, id in ipairs(redis.call('ZRANGE', handed, 0, -1)) do
    local record = record_of(ctx, id)
    local r = redis.call('HMGET', record, 'status', 'worker', 'job')
    if r[1] == 'running' and r[2] == worker and r[3] == id then
      local lease = ctx.in_progress .. id
      local score = tonumber(redis.call('GET', lease))
      redis.call('DEL', lease)
      if score then redis.call('ZADD', ctx.queue, 'XX', score, id) end
      redis.call('HSET', record, 'status', 'queued')
      redis.call('HDEL', record, 'worker', 'started')
      requeued = requeued + 1
    end
  end
  redis.call('DEL', handed)
  redis.call('HDEL', ctx.room, worker)
  redis.call('LREM', ctx.wakers, 0, ctx.channel .. worker)
  -- a live worker that takes these jobs' kind claims them now (the claimer may take only batches)
  for _ = 1, requeued > 0 and redis.call('LLEN', ctx.wakers) or 0 do
    if redis.call('PUBLISH', redis.call('LMOVE', ctx.wakers, ctx.wakers, 'LEFT', 'RIGHT'), '1') > 0 then break end
  end
end

-- Redis's own clock (ms): hand-overs are stamped and judged by it, so the API processes' and the
-- workers' clocks, wherever they run, never decide that a worker stalled
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function stalled(ctx, worker, now)
  local oldest = redis.call('ZRANGE', ctx.handed .. worker, 0, 0, 'WITHSCORES')[2]
  return oldest ~= nil and tonumber(oldest) + ctx.take_ms < now
end
"""

# enqueue(keys, argv[, prepay]): keys are the record, the arq job, the queue, the provider's wakers
# list, its room (live workers' free slots), the job's arq in-progress and retry keys. argv: job id,
# job bytes, score, job ttl ms, record ttl s, the wake-everyone channel, requeue flag, now ms, lease ms
# (0: never hand the job to a worker), the workers' own channel prefix, the take ms, the handed
# prefix, the in-progress prefix, the record key's prefix and suffix, then the record's field/value
# pairs. `prepay()`, if given, is asked just before a job is handed to a worker: true if it drew the
# call's limits (the worker then needs no draw of its own).
# Returns 0 (a requeue of a request that already ended: nothing written), 1 (queued, a worker woken)
# or 2 (handed to a worker).
_ENQUEUE_FN = (
    _LEASE_FN
    + _STALL_FN
    + """
-- wake one worker, in turn (the list rotates), instead of every worker of the provider, all of
-- which would race to claim the one job; a channel nobody listens on any more (a dead worker) is
-- dropped, and with no worker left to ask, every worker is woken
local function wake_one(wakers, everyone)
  local n = redis.call('LLEN', wakers)
  for _ = 1, n do
    local ch = redis.call('LMOVE', wakers, wakers, 'LEFT', 'RIGHT')
    if redis.call('PUBLISH', ch, '1') > 0 then return end
    redis.call('LREM', wakers, 0, ch)
  end
  redis.call('PUBLISH', everyone, '1')
end

-- the live worker with the most free job slots, if one has any and no job that sorts before this
-- one (by priority, then age) waits in the queue: a job handed over must not overtake one that
-- waits, but a synchronous request need not wait behind a batch. On the way, every worker of the
-- room that leaves its hand-overs untaken (stalled) is evicted, its untaken jobs back in the queue
-- (which this job then must not overtake either), and so is a worker nobody listens for any more
-- (dead): the next hand-over after a worker stalls finds it, whoever it goes to
local function pick_worker(ctx, score, now)
  local swept = false
  while true do
    if redis.call('ZRANGEBYSCORE', ctx.queue, '-inf', score, 'LIMIT', 0, 1)[1] then return nil end
    local slots = redis.call('HGETALL', ctx.room)
    if not swept then
      swept = true
      local evicted = false
      for i = 1, #slots, 2 do
        if stalled(ctx, slots[i], now) then
          evict(ctx, slots[i])
          evicted = true
        end
      end
      if evicted then
        if redis.call('ZRANGEBYSCORE', ctx.queue, '-inf', score, 'LIMIT', 0, 1)[1] then return nil end
        slots = redis.call('HGETALL', ctx.room)
      end
    end
    local best, most = nil, 0
    for i = 1, #slots, 2 do
      local free = tonumber(slots[i + 1])
      if free > most then best, most = slots[i], free end
    end
    if not best then return nil end
    if redis.call('PUBSUB', 'NUMSUB', ctx.channel .. best)[2] > 0 then return best end
    evict(ctx, best)
  end
end

local function enqueue(keys, argv, prepay)
  if argv[7] == '1' then
    local st = redis.call('HGET', keys[1], 'status')
    if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
  end
  redis.call('SET', keys[2], argv[2], 'PX', argv[4])
  redis.call('HSET', keys[1], unpack(argv, 16))
  redis.call('EXPIRE', keys[1], argv[5])
  local lease = tonumber(argv[9])
  local ctx = {
    queue = keys[3], room = keys[5], wakers = keys[4], channel = argv[10], take_ms = tonumber(argv[11]),
    handed = argv[12], in_progress = argv[13], record_prefix = argv[14], record_suffix = argv[15],
  }
  local now = lease > 0 and redis_ms()
  local worker = lease > 0 and pick_worker(ctx, argv[3], now)
  if not worker then
    redis.call('ZADD', keys[3], argv[3], argv[1])
    wake_one(keys[4], argv[6])
    return 1
  end
  -- handed over: claimed on the worker's behalf, as the claim script would, and sent on its channel
  -- with the hand-over's time (the worker runs a hand-over that old only if it is still its own)
  local prepaid = prepay ~= nil and prepay()
  local tries = lease_job(keys[3], argv[1], keys[6], keys[7], argv[8], lease, argv[3])
  redis.call('HSET', keys[1], 'status', 'running', 'started', argv[8], 'worker', worker)
  redis.call('HINCRBY', keys[5], worker, -1)
  local handed = argv[12] .. worker
  redis.call('ZADD', handed, now, argv[1])
  redis.call('PEXPIRE', handed, lease * 3)  -- a dead worker's set goes (its leases lapse anyway)
  local message = table.concat({argv[1], argv[3], tries, prepaid and '1' or '0', now, argv[2]}, '|')
  redis.call('PUBLISH', argv[10] .. worker, message)
  return 2
end
"""
)

# KEYS, ARGV: as enqueue's keys and argv.
ENQUEUE_LUA = _ENQUEUE_FN + "return enqueue(KEYS, ARGV)\n"

# The API's admission and enqueue of a new request in one step: the limits' draw (shared/limits.py),
# then, only if it says 'ok', the enqueue; refused, nothing is enqueued and nothing taken. A job handed
# straight to a worker also takes its call's share of the provider's and global buckets here (if they
# hold it now and no call waits for them in a worker's gate), sparing the worker that draw.
# KEYS: the admission draw's buckets, the call draw's buckets, then enqueue's keys. ARGV: the number of
# buckets of each draw, the admission draw's argv (5 + 4 per bucket), the call draw's, then enqueue's.
# Returns the admission draw's answer.
# On Redis Cluster this script needs one primary holding both the `{rl}` buckets and the queue keys,
# as the queue itself does (arq's keys carry no hash tag; see README).
ADMIT_ENQUEUE_LUA = (
    DRAW_FN
    + _ENQUEUE_FN
    + """
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
"""
)

# Claims up to N due jobs of a queue in one round trip, where arq would WATCH/MULTI per job: sets
# arq's in-progress key (a lease the worker renews) and marks each job's request running. A claimed
# job stays in the queue, as arq wants, but its score moves to the lease's end (the worker's heartbeat
# keeps moving it): the next claim's scan sees only unclaimed jobs, and a dead worker's job comes due
# again exactly when its lease lapses. It returns with its original score from the claim.
# It also does arq's per-job read (the job itself) and try count, so running a job costs no more
# round trips than the claim.
# The claimed jobs take their slots in the worker's room entry (see enqueue).
# KEYS: queue, room. ARGV: now ms, max to claim, lease ms, how far to scan, in-progress prefix,
# record key prefix, record key suffix, worker id, arq job prefix, arq retry prefix, the lowest and
# highest score to claim (the kinds of jobs the worker takes: `claim_bounds`), then the wakers list,
# the workers' channel prefix, the handed prefix and the take ms. Returns
# id, score, verdict, job (false if expired), try: five per job. A verdict other than 'ok'
# (cancelled, stale hop, already finished) means the job must not call a provider.
# First, the jobs handed to a stalled or dead worker of the room go back to the queue and the worker
# leaves the room (see `evict`): claims come often under load, and at least twice per
# WORKER_HANDOVER_TAKE_S from an idle worker.
CLAIM_LUA = (
    _LEASE_FN
    + _STALL_FN
    + """
local ctx = {
  queue = KEYS[1], room = KEYS[2], wakers = ARGV[13], channel = ARGV[14], handed = ARGV[15],
  take_ms = tonumber(ARGV[16]), in_progress = ARGV[5], record_prefix = ARGV[6], record_suffix = ARGV[7],
}
local now = redis_ms()
for _, worker in ipairs(redis.call('HKEYS', KEYS[2])) do
  if worker ~= ARGV[8] then
    -- stalled, or dead (nobody listens on its channel): a dead worker that is never the one with the
    -- most free slots would otherwise stay in the room for good
    if stalled(ctx, worker, now) or redis.call('PUBSUB', 'NUMSUB', ctx.channel .. worker)[2] == 0 then
      evict(ctx, worker)
    end
  end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[11], ARGV[12], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local out = {}
local want = tonumber(ARGV[2])
for i = 1, #ids, 2 do
  local id = ids[i]
  local lease = ARGV[5] .. id
  if redis.call('EXISTS', lease) == 0 then
    local tries = lease_job(KEYS[1], id, lease, ARGV[10] .. id, ARGV[1], ARGV[3], '1')
    local record = ARGV[6] .. string.match(id, '^(.*)%.%d+$') .. ARGV[7]
    local st = redis.call('HGET', record, 'status')
    local verdict = st or 'missing'
    if st == 'queued' or st == 'running' then
      if redis.call('HGET', record, 'job') == id then
        redis.call('HSET', record, 'status', 'running', 'started', ARGV[1], 'worker', ARGV[8])
        verdict = 'ok'
      else
        verdict = 'stale'
      end
    end
    out[#out + 1] = id
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = verdict
    out[#out + 1] = redis.call('GET', ARGV[9] .. id)
    out[#out + 1] = tries
    if #out >= 5 * want then break end
  end
end
if #out > 0 and redis.call('HEXISTS', KEYS[2], ARGV[8]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[8], -#out / 5)
end
return out
"""
)

# A job slot given back to the worker's room entry (while the worker is in the room).
_SLOT_BACK_FN = """
local function slot_back(room, worker)
  if worker ~= '' and redis.call('HEXISTS', room, worker) == 1 then redis.call('HINCRBY', room, worker, 1) end
end
"""

# KEYS: room[, the worker's handed set]. ARGV: worker id[, job id]. A job ended without an outcome of
# its own (skipped, failed over, handed back to the queue): its slot is free again, and, handed over,
# it is no longer the worker's to take (left there, it would make the worker look stalled).
SLOT_BACK_LUA = (
    _SLOT_BACK_FN
    + """
slot_back(KEYS[1], ARGV[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
"""
)

# A worker takes the jobs handed to it (see `evict`), and keeps its room entry true. KEYS: room, the
# worker's handed set. ARGV: worker id, in-progress prefix, record prefix, record suffix, max jobs
# ('' to leave the room alone), jobs running (or waiting for a slot) in the worker, rejoin ('1': enter
# the room if out of it, as after an eviction or a Redis restart), then the job ids to take.
# Returns 1 (taken: run it) or 0 (gone: evicted or retaken, never to run here) per id.
# The room entry is set from the truth, not adjusted: the worker's own count of its jobs, and the
# hand-overs sent to it that it has not read yet (its handed set once these are taken). Every
# increment and decrement elsewhere keeps it right between two beats; any drift (a slot given back
# twice or never: crashes, retakes, lost messages) lasts until the next beat only.
TAKE_LUA = (
    _SLOT_BACK_FN
    + """
local out = {}
for i = 8, #ARGV do
  local id = ARGV[i]
  local ours = 0
  if redis.call('ZREM', KEYS[2], id) == 1 then
    local record = ARGV[3] .. string.match(id, '^(.*)%.%d+$') .. ARGV[4]
    local r = redis.call('HMGET', record, 'status', 'worker', 'job')
    if r[1] == 'running' and r[2] == ARGV[1] and r[3] == id and redis.call('EXISTS', ARGV[2] .. id) == 1 then
      ours = 1
    else
      slot_back(KEYS[1], ARGV[1])  -- its slot, taken by the hand-over, is not used here after all
    end
  end
  out[#out + 1] = ours
end
if ARGV[5] ~= '' and (ARGV[7] == '1' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1) then
  local free = tonumber(ARGV[5]) - tonumber(ARGV[6]) - redis.call('ZCARD', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[1], math.max(free, 0))
end
return out
"""
)

# A batch item's end, in the same script that ends its request: append its one result line and
# count it, atomically, so every request of a batch ends in exactly one line whatever crashes.
# The batch is done when its lines reach its total; long-polls on the batch are then signalled.
# Non-batch requests pay one HMGET. `outcome` is the stored `<code>|<json>`.
_BATCH_HOOK = f"""
local function batch_line(bid, line, ok, cost, now, ttl)
  local meta = {keys.lua_key(keys.batch, "bid")}
  local results = {keys.lua_key(keys.batch_results, "bid")}
  redis.call('RPUSH', results, line)
  redis.call('HINCRBY', meta, ok and 'completed' or 'failed', 1)
  if cost > 0 then redis.call('HINCRBYFLOAT', meta, 'cost', cost) end
  local m = redis.call('HMGET', meta, 'total', 'completed', 'failed', 'ending')
  if not m[1] or (tonumber(m[2]) or 0) + (tonumber(m[3]) or 0) < tonumber(m[1]) then return end
  local final = m[4] or 'completed'
  redis.call('HSET', meta, 'status', final, final .. '_at', now)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', results, ttl)
  redis.call('ZREM', '{keys.batch_deadlines()}', bid)
  redis.call('SREM', '{keys.batches_ending()}', bid)
  local watchers = {keys.lua_key(keys.batch_watchers, "bid")}
  for _, ch in ipairs(redis.call('SMEMBERS', watchers)) do redis.call('PUBLISH', ch, bid .. '|s|{{}}') end
  redis.call('DEL', watchers)
end

local function batch_item_ended(record, rid, outcome, now, ttl)
  local f = redis.call('HMGET', record, 'batch', 'cid', 'feed')
  if not f[1] then return end
  local bid = f[1]
  local ok = string.sub(outcome, 1, 1) == 's'
  local body = string.sub(outcome, 3)
  local head = '{{"id":"' .. rid .. '","custom_id":' .. f[2]
  local line
  local cost = 0
  if ok then
    line = head .. ',"response":{{"status_code":200,"request_id":"' .. rid .. '","body":' .. body .. '}},"error":null}}'
    -- the one unescaped "totalCost" key of the body (a quote inside a string is escaped): no decode
    cost = tonumber(string.match(body, '"totalCost":([-+.%deE]+)')) or 0
  else
    line = head .. ',"response":null,"error":' .. body .. '}}'
  end
  redis.call('SREM', {keys.lua_key(keys.batch_fed, "bid")}, rid)
  if f[3] then
    local inflight = {keys.lua_key(keys.feed_inflight, "f[3]")}
    if redis.call('DECR', inflight) < 0 then redis.call('SET', inflight, 0) end
  end
  batch_line(bid, line, ok, cost, now, ttl)
end
"""

# Stores the outcome, signals the waiters and retires the arq job (arq's own clean-up, done here
# so that the result and the job's removal are one atomic step and one round trip), and gives the
# worker's job slot back.
# KEYS: record, watchers, queue, arq job, arq in-progress, arq retry, room[, cache entry, cache lead].
# ARGV: stored outcome, finished ms, record ttl s, message, status, arq job id, cache ttl s, worker id,
# handed prefix (a hand-over ending before its worker's next take leaves the worker's handed set here).
FINISH_LUA = (
    _PUBLISH
    + _BATCH_HOOK
    + _SLOT_BACK_FN
    + """
redis.call('ZREM', KEYS[3], ARGV[6])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
slot_back(KEYS[7], ARGV[8])
if ARGV[8] ~= '' then redis.call('ZREM', ARGV[9] .. ARGV[8], ARGV[6]) end
if KEYS[9] then redis.call('DEL', KEYS[9]) end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'result', ARGV[1], 'finished', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[8] and ARGV[5] == 'succeeded' then
  redis.call('SET', KEYS[8], string.sub(ARGV[1], 3), 'EX', ARGV[7])
end
publish_outcome(KEYS[1], KEYS[2], ARGV[4])
batch_item_ended(KEYS[1], string.match(ARGV[4], '^[^|]*'), ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS: record, watchers. ARGV: stored outcome, finished ms, record ttl s, message, arq job prefix, the
# caller's tenant ('': any tenant). Another tenant's request is 'missing', as one that does not exist.
CANCEL_LUA = (
    _PUBLISH
    + _BATCH_HOOK
    + """
local r = redis.call('HMGET', KEYS[1], 'status', 'tenant')
local st = r[1]
if not st or (ARGV[6] ~= '' and r[2] ~= ARGV[6]) then return 'missing' end
if st ~= 'queued' then return st end
local job = redis.call('HGET', KEYS[1], 'job')
redis.call('ZREM', redis.call('HGET', KEYS[1], 'queue'), job)
redis.call('DEL', ARGV[5] .. job)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'result', ARGV[1], 'finished', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
publish_outcome(KEYS[1], KEYS[2], ARGV[4])
batch_item_ended(KEYS[1], string.match(ARGV[4], '^[^|]*'), ARGV[1], ARGV[2], ARGV[3])
return 'cancelled'
"""
)

# KEYS: record, watchers. ARGV: message. Tells the long-polls watching a request that never ran how it
# ended (a cache leader refused at admission), without writing a record for it.
NOTIFY_LUA = (
    _PUBLISH
    + """
publish_outcome(KEYS[1], KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: watchers, record. ARGV: channel, ttl s, the caller's tenant ('': any tenant, and a request not
# recorded yet). Registers a long-poll and reads the record at once; another tenant's request reads as
# missing and is not watched, so no caller waits on (or learns the timing of) a job not theirs.
WATCH_LUA = """
local r = redis.call('HMGET', KEYS[2], 'status', 'result', 'tenant')
if ARGV[3] ~= '' and r[3] ~= ARGV[3] then return {false, false} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {r[1], r[2]}
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job a worker claimed: its queue score before the claim, the claim's verdict on its request,
    the job's arq bytes (None once expired) and how many times it was claimed (arq's job_try).
    `prepaid`: the enqueue that handed it over drew its call's limits already; `handed_at`: when (ms),
    0 for a claimed job."""

    job_id: str
    score: int
    verdict: str
    job: bytes | None
    tries: int
    prepaid: bool = False
    handed_at: int = 0

    @classmethod
    def handed_over(cls, message: bytes) -> Claimed:
        """A job an enqueue handed to this worker on its own channel (see enqueue)."""
        job_id, score, tries, prepaid, at, job = message.split(b"|", 5)
        return cls(job_id.decode(), int(score), "ok", job, int(tries), prepaid == b"1", int(at))


# a job's score is its enqueue time minus its kind's offset: between the async and the batch offsets
# lies the line between interactive and batch jobs (for ~1,000 days of a job's age)
_KIND_LINE_MS = (keys.PRIORITY_OFFSET_MS["async"] + keys.PRIORITY_OFFSET_MS["batch"]) // 2


def claim_bounds(kinds: JobKinds, now: int) -> tuple[str | int, int]:
    """The scores a worker taking `kinds` of jobs claims, lowest and highest: due jobs (score <= now)
    of those kinds."""
    if kinds == "batch":
        return f"({now - _KIND_LINE_MS}", now
    if kinds == "interactive":
        return "-inf", now - _KIND_LINE_MS
    return "-inf", now


def encode_job(payload: JobPayload, enqueued_ms: int) -> bytes:
    """arq's own job layout, serialised as JSON: nothing on the queue can run code when read.
    orjson writes the payload dataclass as `dataclasses.asdict` would, without the deep copy."""
    return serialize_job(JOB_FUNCTION, (payload,), {}, None, enqueued_ms, serializer=orjson.dumps)


def decode_job(data: bytes) -> dict[str, Any]:
    return orjson.loads(data)  # type: ignore[no-any-return]


class RequestQueue:
    """The shared queue operations, used by the API, the workers and the programmatic client."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl_s: int = 86400,
        job_ttl_ms: int = 86_400_000,
        lease_ms: int = 0,
        take_ms: int = 500,
        admissions: ScriptRunner | None = None,
    ) -> None:
        """`lease_ms`: the workers' job lease (settings.worker_lease_s); 0 never hands a job straight
        to a worker, every job waits in the queue for a claim. `take_ms`: how long a job handed to a
        worker may stay untaken before it goes back to the queue (settings.worker_handover_take_s).
        `admissions`: what runs new requests' admission script (the API's lane: `plumbing.redis_lane`),
        instead of `redis`'s pool."""
        self.redis = redis
        self.admissions = admissions
        self.result_ttl_s = result_ttl_s
        self.job_ttl_ms = job_ttl_ms
        self.lease_ms = lease_ms
        self.take_ms = take_ms
        self._record_prefix, self._record_suffix = keys.request_key_parts()
        self._enqueue = redis.register_script(ENQUEUE_LUA)
        self._admit_enqueue = redis.register_script(ADMIT_ENQUEUE_LUA)
        self._claim = redis.register_script(CLAIM_LUA)
        self._finish = redis.register_script(FINISH_LUA)
        self._cancel = redis.register_script(CANCEL_LUA)
        self._watch = redis.register_script(WATCH_LUA)
        self._notify = redis.register_script(NOTIFY_LUA)
        self._slot_back = redis.register_script(SLOT_BACK_LUA)
        self._take = redis.register_script(TAKE_LUA)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, admissions: ScriptRunner | None = None) -> RequestQueue:
        return cls(
            redis,
            result_ttl_s=settings.result_ttl_s,
            lease_ms=int(settings.worker_lease_s * 1000),
            take_ms=int(settings.worker_handover_take_s * 1000),
            admissions=admissions,
        )

    async def enqueue(self, payload: JobPayload, *, reply: str | None = None, hop: int = 0) -> bool:
        """Put a request's hop on its provider's queue, or straight in the hands of a worker with a
        free slot when none waits there. False if the request already ended."""
        script_keys, args = self._enqueue_call(payload, reply, hop)
        return bool(await self._enqueue(keys=script_keys, args=args))

    async def enqueue_if_admitted(
        self, payload: JobPayload, admission: DrawCall, call: DrawCall, *, reply: str | None = None
    ) -> Verdict:
        """Draw a new request's admission from the limits and, if admitted, enqueue it: one round trip.
        Refused, nothing is enqueued and no bucket is taken from. `call`: the draw of the provider call
        itself, taken only if the job is handed straight to a worker and the buckets hold it now."""
        script_keys, args = self._enqueue_call(payload, reply, 0)
        all_keys = [*admission.keys, *call.keys, *script_keys]
        all_args = [len(admission.keys), len(call.keys), *admission.args, *call.args, *args]
        if self.admissions is not None:
            raw = await self.admissions.evalsha(self._admit_enqueue, all_keys, all_args)
        else:
            raw = await self._admit_enqueue(keys=all_keys, args=all_args)
        return verdict_of(raw)

    def _enqueue_call(self, payload: JobPayload, reply: str | None, hop: int) -> tuple[list[str], list[Any]]:
        """enqueue's keys and argv."""
        enqueued = now_ms()
        jid = keys.job_id(payload.request_id, hop)
        score = enqueued - keys.PRIORITY_OFFSET_MS[payload.kind]
        fields: list[str | int] = [
            "status",
            "queued",
            "provider",
            payload.provider,
            "model",
            payload.call.model,
            "job",
            jid,
            "queue",
            keys.queue(payload.provider),
            "hop",
            hop,
        ]
        if hop == 0:
            fields += ["created", payload.created_ms or enqueued, "kind", payload.kind]
            if reply:
                fields += ["reply", reply]
            if payload.tenant:
                fields += ["tenant", payload.tenant]
        args: list[Any] = [
            jid,
            encode_job(payload, enqueued),
            score,
            self.job_ttl_ms,
            self.result_ttl_s,
            keys.wake_channel(payload.provider),
            "1" if hop else "0",
            enqueued,
            self.lease_ms,
            keys.worker_wake_channel(payload.provider, ""),
            self.take_ms,
            keys.handed(payload.provider, ""),
            keys.arq_in_progress(""),
            self._record_prefix,
            self._record_suffix,
            *fields,
        ]
        script_keys = [
            keys.request(payload.request_id),
            keys.arq_job(jid),
            keys.queue(payload.provider),
            keys.wakers(payload.provider),
            keys.worker_room(payload.provider),
            keys.arq_in_progress(jid),
            keys.arq_retry(jid),
        ]
        return script_keys, args

    async def claim(
        self,
        provider: str,
        queue_name: str,
        *,
        limit: int,
        lease_ms: int,
        scan: int,
        worker: str,
        kinds: JobKinds = "all",
    ) -> list[Claimed]:
        """Claim due jobs of `kinds` for this worker, with each job's bytes and try count."""
        prefix, suffix = keys.request_key_parts()
        now = now_ms()
        raw = await self._claim(
            keys=[queue_name, keys.worker_room(provider)],
            args=[
                now,
                limit,
                lease_ms,
                scan,
                keys.arq_in_progress(""),
                prefix,
                suffix,
                worker,
                keys.arq_job(""),
                keys.arq_retry(""),
                *claim_bounds(kinds, now),
                keys.wakers(provider),
                keys.worker_wake_channel(provider, ""),
                keys.handed(provider, ""),
                self.take_ms,
            ],
        )
        return [
            Claimed(raw[i].decode(), int(float(raw[i + 1])), raw[i + 2].decode(), raw[i + 3], int(raw[i + 4]))
            for i in range(0, len(raw), 5)
        ]

    def finish_into(
        self,
        trip: Trip,
        request_id: str,
        outcome: Outcome,
        job: str,
        provider: str,
        *,
        worker: str = "",
        cache_digest: str | None = None,
        cache_ttl_s: int = 0,
    ) -> None:
        """Queue, on a round trip, the step that stores the outcome, signals every waiter and retires the
        job, atomically, giving `worker`'s job slot back; for a cache leader, it also stores the answer
        in the response cache and releases the lead. Its reply: 1, or 0 if the request had already
        ended (the job is retired all the same)."""
        stored = outcome.encode()
        script_keys = [
            keys.request(request_id),
            keys.watchers(request_id),
            keys.queue(provider),
            keys.arq_job(job),
            keys.arq_in_progress(job),
            keys.arq_retry(job),
            keys.worker_room(provider),
        ]
        if cache_digest:
            script_keys += [keys.cache_entry(cache_digest), keys.cache_lead(cache_digest)]
        args = [
            stored,
            now_ms(),
            self.result_ttl_s,
            request_id.encode() + b"|" + stored,
            outcome.status,
            job,
            cache_ttl_s,
            worker,
            keys.handed(provider, ""),
        ]
        trip.script(self._finish, script_keys, args)

    def slot_back_into(self, trip: Trip, provider: str, worker: str, job_id: str | None = None) -> None:
        """Queue, on a round trip, giving a job slot back to `worker`'s room entry (a job that ended
        without an outcome of its own: skipped, failed over or handed back), and taking `job_id` off
        the worker's handed set."""
        if job_id is None:
            trip.script(self._slot_back, [keys.worker_room(provider)], [worker])
        else:
            trip.script(self._slot_back, [keys.worker_room(provider), keys.handed(provider, worker)], [worker, job_id])

    def retire_into(self, trip: Trip, provider: str, worker: str, job_id: str) -> None:
        """Queue, on a round trip, retiring a job that ended without an outcome of its own (skipped,
        failed over): arq's keys of it deleted, off the queue, its slot given back (as arq's finish
        of a done job, with no result kept)."""
        pipe = trip.pipe
        pipe.delete(keys.arq_in_progress(job_id), keys.arq_retry(job_id), keys.arq_job(job_id))
        pipe.zrem(keys.ARQ_ABORTS, job_id)
        pipe.zrem(keys.queue(provider), job_id)
        self.slot_back_into(trip, provider, worker, job_id)

    def hand_back_into(self, trip: Trip, provider: str, worker: str, job_id: str, score: int) -> None:
        """Queue, on a round trip, handing a job back to the queue (its worker stops, or lost Redis
        mid-job): due again at once in its old place (`score`), its lease dropped so that any worker
        claims it, its slot given back."""
        trip.pipe.zadd(keys.queue(provider), {job_id: score}, xx=True)
        trip.pipe.delete(keys.arq_in_progress(job_id))
        self.slot_back_into(trip, provider, worker, job_id)

    async def take(
        self,
        provider: str,
        worker: str,
        job_ids: list[str],
        *,
        max_jobs: int | None = None,
        running: int = 0,
        rejoin: bool = False,
    ) -> list[bool]:
        """Take jobs handed to `worker` (see TAKE_LUA): for each, whether it is still the worker's to
        run. With `max_jobs`, the worker's room entry is also set from its `running` jobs."""
        prefix, suffix = self._record_prefix, self._record_suffix
        raw = await self._take(
            keys=[keys.worker_room(provider), keys.handed(provider, worker)],
            args=[
                worker,
                keys.arq_in_progress(""),
                prefix,
                suffix,
                "" if max_jobs is None else max_jobs,
                running,
                "1" if rejoin else "0",
                *job_ids,
            ],
        )
        return [bool(x) for x in raw]

    async def cancel(self, request_id: str, outcome: Outcome, *, tenant: str | None = None) -> str:
        """Cancel a request that no worker has started: 'cancelled', or the status that forbids it
        ('missing' also for a request of another tenant than `tenant`; None: any tenant's)."""
        stored = outcome.encode()
        message = request_id.encode() + b"|" + stored
        res = await self._cancel(
            keys=[keys.request(request_id), keys.watchers(request_id)],
            args=[stored, now_ms(), self.result_ttl_s, message, keys.arq_job(""), tenant or ""],
        )
        return res.decode() if isinstance(res, bytes) else str(res)

    async def notify_watchers(self, request_id: str, outcome: Outcome) -> None:
        """Hand an outcome to whoever watches a request that was never enqueued."""
        message = request_id.encode() + b"|" + outcome.encode()
        await self._notify(keys=[keys.request(request_id), keys.watchers(request_id)], args=[message])

    async def watch(
        self, request_id: str, channel: str, ttl_s: int, *, tenant: str | None = None
    ) -> tuple[str | None, bytes | None]:
        """Subscribe a long-poll to a request and read its status in the same round trip. With a
        `tenant`, another tenant's request reads as missing (status None) and is not watched."""
        status, result = await self._watch(
            keys=[keys.watchers(request_id), keys.request(request_id)], args=[channel, ttl_s, tenant or ""]
        )
        return (status.decode() if status else None), result

    async def record(self, request_id: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.request(request_id))  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}
