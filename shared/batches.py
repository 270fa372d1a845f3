"""Batches in Redis: staged items, the fair feed into the arq queues, cancel and expiry.

A batch's items wait in per-batch, per-provider lists, never all in an arq queue. Feeders (every
worker runs one) move them into the provider's arq queue (`shared/lua/batch_feed.lua`), round-robin across
tenants and then across each tenant's batches, keeping at most a bounded number of batch jobs
queued or running per provider. A request of a batch ends through the queue contract's FINISH or
CANCEL script, which appends its result line and counts it in the same step (`lua/lib/batch_hook.lua`).
Items not yet started when a batch is cancelled or expires are ended by `batch_drain.lua`, in chunks,
each chunk atomic, so an interrupted drain is picked up again by any feeder.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import keys, scripts
from shared.durability import ReplicaWait
from shared.queue import encode_job, now_ms
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


class BatchStore:
    """The batch operations, used by the API (submit, status, results, cancel) and the feeders."""

    def __init__(
        self,
        redis: Redis,
        providers: Iterable[str],
        *,
        result_ttl_s: int,
        job_ttl_ms: int = 86_400_000,
        confirm: ReplicaWait | None = None,
    ):
        """`confirm`: the replica confirmation a batch's acceptance waits for (REDIS_DURABILITY=replica)."""
        self.redis = redis
        self.confirm = confirm
        self.providers = tuple(providers)
        self.result_ttl_s = result_ttl_s
        self.job_ttl_ms = job_ttl_ms
        self._activate = redis.register_script(scripts.BATCH_ACTIVATE.source)
        self._feed = redis.register_script(scripts.BATCH_FEED.source)
        self._drain = redis.register_script(scripts.BATCH_DRAIN.source)
        self._watch = redis.register_script(scripts.BATCH_WATCH.source)

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
        call = scripts.batch_activate(
            meta=keys.batch(batch_id),
            deadlines=keys.batch_deadlines(),
            tenant_batches=keys.batches_of_tenant(tenant),
            batch_id=batch_id,
            tenant=tenant,
            now_ms=now,
            expires_ms=expires,
            total=total,
            ttl_s=ttl,
            format=fmt,
            providers=providers,
        )
        if self.confirm is None:
            await self._activate(*call)
            return expires
        async with self.redis.pipeline(transaction=False) as pipe:  # one connection: WAIT covers the staging too
            await self._activate(*call, client=pipe)
            pipe.execute_command(*self.confirm.command)
            _, acked = await pipe.execute()
        if not self.confirm.confirmed(acked):
            await self.drain_all(batch_id, "cancelled")
            raise self.confirm.refusal("batch")
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
            *scripts.batch_feed(
                tenant_ring=keys.feed_tenants(provider),
                inflight=keys.feed_inflight(provider),
                queue=keys.queue(provider),
                cap=cap,
                max_move=max_move,
                now_ms=now_ms(),
                job_ttl_ms=self.job_ttl_ms,
                record_ttl_s=self.result_ttl_s,
                provider=provider,
                wake_channel=keys.wake_channel(provider),
                min_move=min_move,
            )
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
            *scripts.batch_drain(
                meta=keys.batch(batch_id),
                batch_id=batch_id,
                reason=reason,
                now_ms=now_ms(),
                chunk=chunk,
                ttl_s=self.result_ttl_s,
                error=orjson.dumps(error),
                code="c" if reason == "cancelled" else "f",
                providers=self.providers,
            )
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
        status = await self._watch(
            *scripts.batch_watch(
                watchers=keys.batch_watchers(batch_id), meta=keys.batch(batch_id), channel=channel, ttl_s=ttl_s
            )
        )
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
