"""`GET /api/v1/llm/health` (provider health, breakers, scores) and `GET /api/v1/llm/status` (the system)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from api.auth import Principal, authenticator_of, current_principal
from api.openapi_docs import GATEWAY_ERRORS, HealthDoc, StatusDoc, ok
from api.outcomes import json_response
from api.provider_view import provider_view_lifespan, view_of
from api.state import AppState, get_state
from shared import __version__, keys
from shared.health import overall, read_health
from shared.queue import now_ms
from shared.routing import PROVIDERS

router = APIRouter(prefix="/api/v1/llm", tags=["health"], lifespan=provider_view_lifespan, responses=GATEWAY_ERRORS)

REDIS_PING_TIMEOUT_S = 2.0


def _live_since_ms(state: AppState) -> int:
    """Workers heartbeat every lease/3; three missed beats and they no longer count as live."""
    return now_ms() - int(3 * state.settings.worker_lease_s * 1000)


@router.get(
    "/health",
    summary="Provider health: status, latency, success and error rates, breaker, score",
    responses=ok(HealthDoc),
)
async def health(
    request: Request, state: AppState = Depends(get_state), _: Principal = Depends(current_principal)
) -> Response:
    since = _live_since_ms(state)
    async with state.redis.pipeline(transaction=False) as pipe:
        for p in PROVIDERS:
            pipe.zcount(keys.worker_heartbeat(p), since, "+inf")
        workers = await pipe.execute()
    # a provider is served if this process has its key or some worker serves its queue
    secrets = authenticator_of(request.app).secrets
    served = [p for p, n in zip(PROVIDERS, workers, strict=True) if n or secrets.api_keys(p)]
    healths = await read_health(state.redis, served, state.settings, now_ms())
    data = {
        "overall": overall(healths.values()).value,
        "providers": {p: h.to_api() for p, h in healths.items()},
    }
    return json_response(orjson.dumps({"success": True, "data": data}))


@router.get(
    "/status",
    summary="Version, uptime, Redis reachability, queue depth and live workers per provider",
    responses=ok(StatusDoc),
)
async def status(
    request: Request, state: AppState = Depends(get_state), _: Principal = Depends(current_principal)
) -> Response:
    redis: dict[str, Any] = {"reachable": False, "latencyMs": None}
    providers: dict[str, dict[str, Any]] = {p: {"queueDepth": None, "workers": None} for p in PROVIDERS}
    monitor: dict[str, Any] = {"holder": None}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
            await state.redis.ping()
        redis = {"reachable": True, "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
        since = _live_since_ms(state)
        async with state.redis.pipeline(transaction=False) as pipe:
            for p in PROVIDERS:
                pipe.zcard(keys.queue(p))
                pipe.zcount(keys.worker_heartbeat(p), since, "+inf")
            pipe.get(keys.monitor_lease())
            async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
                rows = await pipe.execute()
        for i, p in enumerate(PROVIDERS):
            providers[p] = {"queueDepth": int(rows[2 * i]), "workers": int(rows[2 * i + 1])}
        lease = rows[-1]
        monitor["holder"] = lease.decode().rsplit("|", 1)[0] if lease else None
    except (RedisError, OSError, TimeoutError):
        pass  # reported as unreachable: this endpoint answers precisely when Redis does not
    view = view_of(request.app)
    routing = {
        "avoiding": sorted(view.unavailable(now_ms())) if view else [],
        "viewLive": bool(view and view.live),
    }
    data = {
        "version": __version__,
        "uptime": round(time.time() - state.started, 3),
        "startedAt": int(state.started * 1000),
        "primaryProvider": state.settings.primary_llm_provider,
        "failover": state.settings.enable_llm_failover,
        "redis": redis,
        "providers": providers,
        "healthMonitor": monitor,
        "routing": routing,
    }
    return json_response(orjson.dumps({"success": True, "data": data}))
