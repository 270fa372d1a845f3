"""The response cache: exact match on the normalised request, shared through Redis.

- The key is a digest of what determines the answer (messages, model, temperature, max tokens, top_p,
  stop), not of who serves it: an answer computed by either provider serves both.
- Only deterministic requests are cached unless configured: temperature 0. An unset temperature means
  the provider's default (1.0), so it is not cached either.
- Identical requests in flight are coalesced: the first becomes the leader and is enqueued; the others
  wait on the leader's outcome. The worker stores the answer and releases the lead in the same script
  that stores the leader's outcome (`shared/queue.py`), so a waiter can never miss it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from shared import keys, scripts
from shared.schemas import ChatRequest
from shared.settings import Settings


def digest(req: ChatRequest, settings: Settings) -> str | None:
    """The cache digest of a request, or None when it must not be cached."""
    if not settings.enable_llm_caching or req.cache is False:
        return None
    if not settings.cache_nonzero_temperature and (req.temperature is None or req.temperature > 0):
        return None
    normalised: dict[str, Any] = {
        "messages": [[m.role, m.content if m.content.__class__ is str else m.wire(), m.name] for m in req.messages],
        "model": req.model,
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
        "top_p": req.top_p,
        "stop": req.stop,
    }
    options = req.provider_options()
    if options is not None:  # tools, response format, n...: a different answer
        normalised["options"] = options
    return hashlib.sha256(orjson.dumps(normalised, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Lookup:
    kind: Literal["hit", "lead", "follow"]
    value: bytes  # hit: the cached answer's JSON; follow: the leader's request id

    @property
    def leader(self) -> str:
        return self.value.decode()


class ResponseCache:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._lookup = redis.register_script(scripts.CACHE_LOOKUP.source)
        self._release = redis.register_script(scripts.LEASE_RELEASE.source)

    async def lookup(self, key: str, request_id: str, lead_ttl_s: float) -> Lookup:
        """One round trip: the cached answer, or the lead for this request, or the leader to wait on."""
        kind, value = await self._lookup(
            *scripts.cache_lookup(
                entry=keys.cache_entry(key),
                lead=keys.cache_lead(key),
                request_id=request_id,
                lead_ttl_ms=int(lead_ttl_s * 1000),
            )
        )
        return Lookup(kind.decode(), value)

    async def release(self, key: str, request_id: str) -> None:
        """Give up a lead this request took but will not compute (e.g. refused at admission)."""
        await self._release(*scripts.lease_release(lease=keys.cache_lead(key), token=request_id))

    async def clear(self) -> int:
        """Drop every cached answer and lead; returns how many keys went."""
        removed = 0
        batch: list[bytes] = []
        async for name in self.redis.scan_iter(match=keys.CACHE_PATTERN, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                removed += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.redis.unlink(*batch)
        return removed
