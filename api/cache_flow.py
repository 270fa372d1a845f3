"""Serving synchronous chat requests from the response cache, and coalescing identical ones.

A request whose digest is cached is answered at once (`cached: true`, zero cost, no worker).
Otherwise the first of several identical requests becomes the leader and goes through the queue;
the others wait on the leader's outcome and answer with it, so one upstream call serves them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from api.state import AppState
from shared.metrics import model_labels, record_cache_hit
from shared.queue import TERMINAL, Outcome
from shared.schemas import Cost

log = logging.getLogger(__name__)
LEAD_GRACE_S = 5.0  # a lead outlives its leader's wait a little, then expires on its own
_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class Served:
    """An answer that needs no job of this request's own. `outcome` None: the leader did not finish
    in time, and `request_id` names the leader's job, whose result can be fetched later."""

    request_id: str
    outcome: Outcome | None


async def serve_from_cache(
    state: AppState, digest: str, request_id: str, timeout_s: float, tenant: str
) -> Served | None:
    """The cached or coalesced answer, or None when this request leads and must be computed.
    `tenant`: the caller, whose metrics count the hit."""
    started = time.perf_counter()
    lookup = await state.cache.lookup(digest, request_id, timeout_s + LEAD_GRACE_S)
    if lookup.kind == "lead":
        return None
    if lookup.kind == "hit":
        return Served(request_id, as_cached(state, lookup.value, request_id, started, tenant))
    leader = lookup.leader
    state.waiter.expect(leader)
    status, stored = await state.queue.watch(leader, state.waiter.channel, int(timeout_s + LEAD_GRACE_S))
    if status in TERMINAL and stored:
        state.waiter.forget(leader)
        outcome: Outcome | None = Outcome.parse(stored)
    else:  # running, queued, or not enqueued yet: its end reaches us through the watch
        outcome = await state.waiter.wait(leader, timeout_s)
    if outcome is None:
        return Served(leader, None)
    if outcome.status != "succeeded":
        return Served(request_id, outcome)
    return Served(request_id, as_cached(state, outcome.body, request_id, started, tenant))


async def abandon_lead(state: AppState, digest: str, request_id: str, refusal: Outcome) -> None:
    """A leader refused at admission: free the lead and give its waiters the same answer."""
    await state.cache.release(digest, request_id)
    await state.queue.notify_watchers(request_id, refusal)


async def _count_hit(state: AppState, provider: str, model: str, latency_ms: float, tenant: str) -> None:
    try:
        labels = model_labels(state.settings)
        await record_cache_hit(state.redis, provider, model, latency_ms, tenant=tenant, labels=labels)
    except (RedisError, OSError) as exc:
        log.warning("cache hit not counted (%s)", type(exc).__name__)


def as_cached(state: AppState, body: bytes, request_id: str, started: float, tenant: str) -> Outcome:
    data: dict[str, Any] = orjson.loads(body)
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    data.update(id=request_id, cached=True, latencyMs=latency_ms, attempts=[])
    if data.get("cost") is not None:
        data["cost"] = Cost(0.0, 0.0, data["cost"].get("currency", "USD")).to_api()
    task = asyncio.create_task(_count_hit(state, data["provider"], data["model"], latency_ms, tenant))
    _background.add(task)  # counted in metrics off the answer's path
    task.add_done_callback(_background.discard)
    return Outcome("succeeded", orjson.dumps(data))
