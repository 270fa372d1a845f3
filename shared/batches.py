"""Batches in Redis: staged items, the fair feed into the arq queues, cancel and expiry.

A batch's items wait in per-batch, per-provider lists, never all in an arq queue. Feeders (every
worker runs one) move them into the provider's arq queue with `FEED_LUA`, round-robin across
tenants and then across each tenant's batches, keeping at most a bounded number of batch jobs
queued or running per provider. A request of a batch ends through the queue contract's FINISH or
CANCEL script, which appends its result line and counts it in the same step (`queue._BATCH_HOOK`).
Items not yet started when a batch is cancelled or expires are ended by `DRAIN_LUA`, in chunks,
each chunk atomic, so an interrupted drain is picked up again by any feeder.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import keys
from shared.queue import _BATCH_HOOK, _PUBLISH, encode_job, now_ms
from shared.schemas import JobPayload

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
STAGING_TTL_S = 3600  # keys of a batch still being uploaded vanish if its API process dies
BATCH_ID = re.compile(r"^batch_[0-9a-f]{32}$")
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

EXPIRED_ERROR = {
    "type": "expired",
    "message": "the batch's completion window ended before this request ran",
    "param": None,
    "retryable": False,
}
CANCELLED_ERROR = {
    "type": "cancelled_error",
    "message": "the batch was cancelled before this request ran",
    "param": None,
    "retryable": False,
}


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def parse_window(text: str) -> float:
    """`24h`, `90m`, `30s`, `2d` or plain seconds -> seconds. ValueError if malformed."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError("the completion window is not a duration like 24h, 90m or 3600s")  # value not echoed
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def format_window(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def encode_item(payload: JobPayload, submitted_ms: int) -> bytes:
    """A staged item: `<request id>\\t<model>\\t<custom id as JSON>\\t<arq job JSON>`. The job is
    encoded once, at submission; the feeder writes it to the queue as is."""
    head = f"{payload.request_id}\t{payload.call.model}\t".encode()
    return head + orjson.dumps(payload.custom_id) + b"\t" + encode_job(payload, submitted_ms)


# KEYS: meta, deadlines, tenant's batch index. ARGV: batch id, tenant, now ms, expires ms, total,
# keys ttl s, format, then the providers that have items.
ACTIVATE_LUA = f"""
local bid, tenant = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], 'status') ~= 'validating' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'in_progress_at', ARGV[3], 'expires_at', ARGV[4],
  'total', ARGV[5], 'completed', 0, 'failed', 0, 'format', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', {keys.lua_key(keys.batch_results, "bid")}, ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], bid)
redis.call('ZADD', KEYS[3], ARGV[3], bid)
for i = 8, #ARGV do
  local p = ARGV[i]
  redis.call('EXPIRE', {keys.lua_key(keys.batch_pending, "bid", "p")}, ARGV[6])
  redis.call('RPUSH', {keys.lua_key(keys.feed_tenant_batches, "p", "tenant")}, bid)
  local ring = {keys.lua_key(keys.feed_tenants, "p")}
  if not redis.call('LPOS', ring, tenant) then redis.call('RPUSH', ring, tenant) end
  redis.call('PUBLISH', {keys.lua_key(keys.feed_channel, "p")}, bid)
end
return 1
"""

# Moves up to min(max move, cap - in flight) items into a provider's arq queue, one per turn of the
# tenant ring (then of that tenant's batch ring): tenants share the queue round-robin whatever the
# size of their batches. Exhausted or ending batches leave the rings as they are met.
# Below `min move` free places nothing moves: refills come in batches, not one call per finished job.
# KEYS: tenant ring, in-flight counter, arq queue. ARGV: cap, max move, now ms, job ttl ms,
# record ttl s, provider, wake channel, min move.
FEED_LUA = f"""
local budget = tonumber(ARGV[1]) - tonumber(redis.call('GET', KEYS[2]) or '0')
if budget > tonumber(ARGV[2]) then budget = tonumber(ARGV[2]) end
if budget <= 0 or budget < tonumber(ARGV[8]) then return 0 end
local p = ARGV[6]
local base = tonumber(ARGV[3]) - 1
local moved = 0
while moved < budget do
  local tenant = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not tenant then break end
  local tring = {keys.lua_key(keys.feed_tenant_batches, "p", "tenant")}
  local bid = redis.call('LMOVE', tring, tring, 'LEFT', 'RIGHT')
  local entry = false
  if bid then
    if redis.call('HGET', {keys.lua_key(keys.batch, "bid")}, 'status') == 'in_progress' then
      entry = redis.call('LPOP', {keys.lua_key(keys.batch_pending, "bid", "p")})
    end
    if not entry then redis.call('LREM', tring, 0, bid) end
  end
  if entry then
    local rid, model, cid, job = string.match(entry, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$')
    local jid = rid .. '.0'
    redis.call('SET', {keys.lua_key(keys.arq_job, "jid")}, job, 'PX', ARGV[4])
    -- fractions of a ms keep the round-robin order inside one feed, still all in the past
    redis.call('ZADD', KEYS[3], string.format('%.3f', base + moved / 1000), jid)
    local record = {keys.lua_key(keys.request, "rid")}
    redis.call('HSET', record, 'status', 'queued', 'provider', p, 'model', model, 'job', jid, 'queue', KEYS[3],
      'hop', 0, 'created', ARGV[3], 'kind', 'batch', 'tenant', tenant, 'batch', bid, 'cid', cid, 'feed', p)
    redis.call('EXPIRE', record, ARGV[5])
    redis.call('SADD', {keys.lua_key(keys.batch_fed, "bid")}, rid)
    moved = moved + 1
  elseif redis.call('LLEN', tring) == 0 then
    redis.call('LREM', KEYS[1], 0, tenant)
  end
end
if moved > 0 then
  redis.call('INCRBY', KEYS[2], moved)
  redis.call('PUBLISH', ARGV[7], '1')
end
return moved
"""

# Ends up to `chunk` items of a cancelled or expired batch that no worker has started: first the
# items never fed, then fed items still queued. Running items end on their own. The first call
# marks the batch (status cancelling, or finalizing for an expiry). Returns the items still to end
# here, 0 when only running items (if any) remain. KEYS: meta. ARGV: batch id, reason (cancelled |
# expired), now ms, chunk, ttl s, error JSON, outcome code (c | f), then the providers.
DRAIN_LUA = (
    _PUBLISH
    + _BATCH_HOOK
    + f"""
local bid, reason, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local st = redis.call('HGET', KEYS[1], 'status')
if not st or st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'expired' or st == 'validating' then
  redis.call('SREM', '{keys.batches_ending()}', bid)
  return 0
end
if not redis.call('HGET', KEYS[1], 'ending') then
  local status = reason == 'cancelled' and 'cancelling' or 'finalizing'
  redis.call('HSET', KEYS[1], 'ending', reason, 'status', status, status .. '_at', now)
  redis.call('SADD', '{keys.batches_ending()}', bid)
end
local err = ARGV[6]
local left = tonumber(ARGV[4])
for i = 8, #ARGV do
  local pending = {keys.lua_key(keys.batch_pending, "bid", "ARGV[i]")}
  while left > 0 do
    local entry = redis.call('LPOP', pending)
    if not entry then break end
    local rid, cid = string.match(entry, '^([^\\t]*)\\t[^\\t]*\\t([^\\t]*)\\t')
    batch_line(bid, '{{"id":"' .. rid .. '","custom_id":' .. cid .. ',"response":null,"error":' .. err .. '}}',
      false, 0, now, ttl)
    left = left - 1
  end
end
if left > 0 then
  local stored = ARGV[7] .. '|' .. err
  for _, rid in ipairs(redis.call('SMEMBERS', {keys.lua_key(keys.batch_fed, "bid")})) do
    local record = {keys.lua_key(keys.request, "rid")}
    local r = redis.call('HMGET', record, 'status', 'job', 'queue')
    if r[1] == 'queued' then
      redis.call('ZREM', r[3], r[2])
      redis.call('DEL', {keys.lua_key(keys.arq_job, "r[2]")})
      redis.call('HSET', record, 'status', ARGV[7] == 'c' and 'cancelled' or 'failed', 'result', stored,
        'finished', now)
      redis.call('EXPIRE', record, ttl)
      publish_outcome(record, {keys.lua_key(keys.watchers, "rid")}, rid .. '|' .. stored)
      batch_item_ended(record, rid, stored, now, ttl)
    end
  end
end
local remaining = 0
for i = 8, #ARGV do
  remaining = remaining + redis.call('LLEN', {keys.lua_key(keys.batch_pending, "bid", "ARGV[i]")})
end
if remaining == 0 then redis.call('SREM', '{keys.batches_ending()}', bid) end
return remaining
"""
)

# KEYS: watchers, meta. ARGV: channel, ttl s. Registers a long-poll and reads the status at once.
WATCH_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGET', KEYS[2], 'status')
"""


class BatchStore:
    """The batch operations, used by the API (submit, status, results, cancel) and the feeders."""

    def __init__(self, redis: Redis, providers: Iterable[str], *, result_ttl_s: int, job_ttl_ms: int = 86_400_000):
        self.redis = redis
        self.providers = tuple(providers)
        self.result_ttl_s = result_ttl_s
        self.job_ttl_ms = job_ttl_ms
        self._activate = redis.register_script(ACTIVATE_LUA)
        self._feed = redis.register_script(FEED_LUA)
        self._drain = redis.register_script(DRAIN_LUA)
        self._watch = redis.register_script(WATCH_LUA)

    # --- submission -------------------------------------------------------------------------

    async def create(self, batch_id: str, tenant: str, fields: dict[str, str | int | float]) -> None:
        """Open a batch in `validating`; its staged keys expire unless it is activated."""
        async with self.redis.pipeline(transaction=True) as pipe:
            mapping = {"id": batch_id, "tenant": tenant, "status": "validating", **fields}
            pipe.hset(keys.batch(batch_id), mapping=mapping)
            pipe.expire(keys.batch(batch_id), STAGING_TTL_S)
            await pipe.execute()

    async def stage(self, batch_id: str, items: dict[str, list[bytes]]) -> None:
        """Append validated items to the batch's pending lists (one round trip per chunk)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for provider, entries in items.items():
                if entries:
                    key = keys.batch_pending(batch_id, provider)
                    pipe.rpush(key, *entries)
                    pipe.expire(key, STAGING_TTL_S)
            await pipe.execute()

    async def activate(
        self, batch_id: str, tenant: str, total: int, window_s: float, providers: Iterable[str], fmt: str
    ) -> int:
        """Make a fully staged batch visible to the feeders. Returns its expiry (ms)."""
        now = now_ms()
        expires = now + int(window_s * 1000)
        ttl = int(window_s) + self.result_ttl_s
        await self._activate(
            keys=[keys.batch(batch_id), keys.batch_deadlines(), keys.batches_of_tenant(tenant)],
            args=[batch_id, tenant, now, expires, total, ttl, fmt, *providers],
        )
        return expires

    async def discard(self, batch_id: str) -> None:
        """Drop a batch that was refused while validating: nothing of it was ever fed."""
        await self.redis.delete(
            keys.batch(batch_id),
            keys.batch_results(batch_id),
            *(keys.batch_pending(batch_id, p) for p in self.providers),
        )

    async def fail(self, batch_id: str, message: str) -> None:
        """A batch whose upload broke off after staging began: failed, its staged items dropped."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(keys.batch_pending(batch_id, p) for p in self.providers))
            pipe.hset(
                keys.batch(batch_id),
                mapping={"status": "failed", "failed_at": now_ms(), "error": message, "total": 0},
            )
            pipe.expire(keys.batch(batch_id), self.result_ttl_s)
            await pipe.execute()

    # --- the feed ----------------------------------------------------------------------------

    async def feed(self, provider: str, *, cap: int, max_move: int, min_move: int = 1) -> int:
        """Move batch items into the provider's arq queue up to the cap; the number moved."""
        moved = await self._feed(
            keys=[keys.feed_tenants(provider), keys.feed_inflight(provider), keys.queue(provider)],
            args=[
                cap,
                max_move,
                now_ms(),
                self.job_ttl_ms,
                self.result_ttl_s,
                provider,
                keys.wake_channel(provider),
                min_move,
            ],
        )
        return int(moved)

    async def has_pending(self, provider: str) -> bool:
        return bool(await self.redis.llen(keys.feed_tenants(provider)))  # type: ignore[misc]

    # --- cancel and expiry -------------------------------------------------------------------

    async def drain(self, batch_id: str, reason: str, *, chunk: int = 500) -> int:
        """End up to `chunk` unstarted items of a cancelled or expired batch; how many remain.
        Each chunk is one script, kept short so that it never holds Redis up for long."""
        error = CANCELLED_ERROR if reason == "cancelled" else EXPIRED_ERROR
        remaining = await self._drain(
            keys=[keys.batch(batch_id)],
            args=[
                batch_id,
                reason,
                now_ms(),
                chunk,
                self.result_ttl_s,
                orjson.dumps(error),
                "c" if reason == "cancelled" else "f",
                *self.providers,
            ],
        )
        return int(remaining)

    async def drain_all(self, batch_id: str, reason: str) -> None:
        while await self.drain(batch_id, reason):
            pass

    async def due_for_expiry(self, limit: int = 20) -> list[str]:
        ids = await self.redis.zrangebyscore(keys.batch_deadlines(), "-inf", now_ms(), start=0, num=limit)
        return [i.decode() for i in ids]

    async def ending(self) -> list[str]:
        """Batches whose cancel or expiry has items left to end (an interrupted drain)."""
        ids = await self.redis.smembers(keys.batches_ending())  # type: ignore[misc]
        return sorted(i.decode() for i in ids)

    async def end_reason(self, batch_id: str) -> str:
        reason = await self.redis.hget(keys.batch(batch_id), "ending")  # type: ignore[misc]
        return reason.decode() if reason else "expired"

    # --- reading -----------------------------------------------------------------------------

    async def meta(self, batch_id: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.batch(batch_id))  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def watch(self, batch_id: str, channel: str, ttl_s: int) -> str | None:
        status = await self._watch(keys=[keys.batch_watchers(batch_id), keys.batch(batch_id)], args=[channel, ttl_s])
        return status.decode() if status else None

    async def result_lines(self, batch_id: str, *, chunk: int = 1000) -> AsyncIterator[list[bytes]]:
        """The result lines written so far, in the order requests ended, a chunk at a time."""
        key = keys.batch_results(batch_id)
        start = 0
        while True:
            lines: list[bytes] = await self.redis.lrange(key, start, start + chunk - 1)  # type: ignore[misc]
            if not lines:
                return
            yield lines
            start += len(lines)

    async def list_for(self, tenant: str, limit: int) -> list[dict[str, str]]:
        ids = await self.redis.zrevrange(keys.batches_of_tenant(tenant), 0, limit - 1)
        out = []
        for raw in ids:
            meta = await self.meta(raw.decode())
            if meta:
                out.append(meta)
        return out


def counts(meta: dict[str, str]) -> dict[str, int]:
    return {
        "total": int(meta.get("total", 0)),
        "completed": int(meta.get("completed", 0)),
        "failed": int(meta.get("failed", 0)),
    }


def _ms(meta: dict[str, str], name: str) -> int | None:
    value = meta.get(name)
    return int(value) if value else None


def batch_view(meta: dict[str, str], results_url: str) -> dict[str, Any]:
    """The camelCase view of a batch on the /api/v1/llm routes."""
    view: dict[str, Any] = {
        "id": meta["id"],
        "object": "batch",
        "status": meta.get("status"),
        "format": meta.get("format"),
        "completionWindow": format_window(float(meta.get("window_s", 0))),
        "requestCounts": counts(meta),
        "cost": {"totalCost": round(float(meta.get("cost", 0) or 0), 10), "currency": "USD"},
        "createdAt": _ms(meta, "created_at"),
        "inProgressAt": _ms(meta, "in_progress_at"),
        "expiresAt": _ms(meta, "expires_at"),
        "cancellingAt": _ms(meta, "cancelling_at"),
        "finalizingAt": _ms(meta, "finalizing_at"),
        "completedAt": _ms(meta, "completed_at"),
        "cancelledAt": _ms(meta, "cancelled_at"),
        "expiredAt": _ms(meta, "expired_at"),
        "failedAt": _ms(meta, "failed_at"),
        "metadata": orjson.loads(meta["metadata"]) if meta.get("metadata") else None,
        "resultsUrl": results_url,
    }
    if meta.get("error"):
        view["error"] = meta["error"]
    return view
