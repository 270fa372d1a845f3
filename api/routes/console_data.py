"""The figures the web console (`/console`, api/console/) draws, as documented JSON routes.

Every route takes a bearer token like the rest of `/api/v1/llm`. A user token sees its own tenant's
traffic, spend, refusals, logs and batches only (`Principal.tenant_scope`, checked here, never only
hidden in the page); the gateway-wide parts it sees (provider health, breakers, queue depths, live
workers, provider and global limits) are what `/health` and `/status` already show it. Everything
is read from what Redis already keeps (shared/metrics.py buckets, breakers, health, buckets of the
limits, queues, batches, the request log): the console adds no writes and nothing to the chat path.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.responses import Response

from api.auth import Principal, current_principal
from api.openapi_docs import GATEWAY_ERRORS, BatchDoc, Doc, ProviderHealthDoc, ok
from api.outcomes import json_response
from api.routes.batches import get_store, results_url
from api.routes.metrics import TIME_DOC, Provider, _time_ms
from api.routes.prometheus import rate_limit_view
from api.state import AppState, get_state
from shared import keys
from shared.batches import TERMINAL, BatchStore, batch_view
from shared.breaker import BreakerSnapshot, BreakerState
from shared.errors import ErrorType, GatewayError
from shared.health import read_health
from shared.limits import Bucket, LimitPlan
from shared.metrics import (
    COST_UNIT,
    PERIOD_BUCKETS,
    bucket_of,
    histogram_from,
    provider_figures,
    quantile_ms,
)
from shared.queue import now_ms
from shared.request_log import MAX_READ, LogReader
from shared.routing import PROVIDERS

router = APIRouter(prefix="/api/v1/llm/console", tags=["console"], responses=GATEWAY_ERRORS)

RECENT_MINUTES = 5  # error rate and latency percentiles of the overview: the last five minutes
TOP_SERIES = 8  # models or tenants drawn in a cost chart; the rest are summed as "other"
LOG_PAGES = 10  # reads of the log one filtered page looks through at most
ADMIN_BATCHES = 50


def _ok(data: object) -> Response:
    return json_response(orjson.dumps({"success": True, "data": data}))


# -- documentation ---------------------------------------------------------------------------------


class SessionDoc(Doc):
    subject: str
    role: Literal["admin", "user"]
    tenant: str | None = Field(description="the one tenant this token sees (None: an admin sees every tenant)")


class LimitGaugeDoc(Doc):
    scope: str
    unit: Literal["requests", "tokens"]
    per_minute: float
    capacity: float
    available: float
    fill: float = Field(description="share of the bucket in use, 0..1")


class ProviderOverviewDoc(Doc):
    health: ProviderHealthDoc
    half_open_in_ms: int | None = Field(description="until the open breaker lets a probe through")
    requests_per_min: float
    error_rate: float | None
    p50_latency: float | None
    p95_latency: float | None
    live_workers: int
    queue: dict[str, int] = Field(description="jobs waiting or running, by kind: sync, async, batch")


class OverviewDoc(Doc):
    now: int
    tenant: str | None
    providers: dict[str, ProviderOverviewDoc]
    limits: list[LimitGaugeDoc]
    refused_per_min: dict[str, float]
    cache_hit_rate: float | None


class SeriesDoc(Doc):
    period: Literal["hour", "day"]
    tenant: str | None
    times: list[int] = Field(description="each bucket's start, epoch seconds")
    requests: dict[str, list[int]]
    errors: dict[str, list[int]]
    cache_hit_rate: list[float | None]
    latency: dict[str, list[float | None]] = Field(description="p50, p95, p99 in ms")
    cost_by_model: dict[str, list[float]]
    cost_by_tenant: dict[str, list[float]]
    refused: dict[str, list[int]]


class ConsoleLogsDoc(Doc):
    logs: list[dict[str, Any]]
    count: int
    next_cursor: str | None


class ConsoleBatchesDoc(Doc):
    batches: list[BatchDoc]


# -- who is looking --------------------------------------------------------------------------------


@router.get("/session", summary="Who this token is: the console's login check", responses=ok(SessionDoc))
async def session(principal: Principal = Depends(current_principal)) -> Response:
    return _ok({"subject": principal.subject, "role": principal.role, "tenant": principal.tenant_scope})


def _scoped_tenant(principal: Principal, tenant: str | None) -> str | None:
    """The tenant whose figures to read: a user's own, whatever it asks; an admin's choice (None: all)."""
    scope = principal.tenant_scope
    if scope is not None and tenant not in (None, scope):
        raise GatewayError(ErrorType.PERMISSION, "a user token shows only its own tenant's figures", param="tenant")
    return scope if scope is not None else tenant


def _bucket_keys(resolution: str, buckets: range, tenant: str | None) -> list[str]:
    if tenant is None:
        return [keys.metrics_bucket(resolution, b) for b in buckets]
    return [keys.metrics_tenant_bucket(resolution, b, tenant) for b in buckets]


# -- overview --------------------------------------------------------------------------------------


def queue_kind_bounds(now: int) -> dict[str, tuple[str, str]]:
    """Score ranges of each kind on a provider's queue: a job's score is its enqueue time minus its
    kind's offset (keys.PRIORITY_OFFSET_MS), and the offsets are years apart, so each kind's jobs
    (retries scheduled later included) lie in a band of their own."""
    offsets = keys.PRIORITY_OFFSET_MS
    sync_line = now - (offsets["sync"] + offsets["async"]) // 2
    batch_line = now - (offsets["async"] + offsets["batch"]) // 2
    return {
        "sync": ("-inf", f"({sync_line}"),
        "async": (str(sync_line), f"({batch_line}"),
        "batch": (str(batch_line), "+inf"),
    }


def gauge(scope: str, unit: str, bucket: Bucket, raw: Mapping[bytes, bytes], now: int) -> dict[str, Any]:
    level, _ = rate_limit_view(bucket, raw, now)
    available = max(level, 0.0)
    fill = 1.0 - available / bucket.capacity if bucket.capacity > 0 else 0.0
    return {
        "scope": scope,
        "unit": unit,
        "perMinute": bucket.per_minute,
        "capacity": bucket.capacity,
        "available": round(available, 1),
        "fill": round(min(max(fill, 0.0), 1.0), 4),
    }


def _per_minute(recent: list[Counter[str]], field_of: str, now_s: float) -> float:
    """A sliding minute: the current bucket plus the unexpired part of the previous one."""
    into = (now_s % 60) / 60
    prev, cur = recent[-2], recent[-1]
    return round(cur.get(field_of, 0) + prev.get(field_of, 0) * (1 - into), 2)


def _requests_of(counters: Mapping[str, int], provider: str) -> tuple[int, int]:
    figures = provider_figures(counters, provider)
    return figures.requests, figures.errors


@router.get(
    "/overview",
    summary="Live figures: provider health, breakers, traffic, latency, limits, queues, workers",
    responses=ok(OverviewDoc),
)
async def overview(
    tenant: str | None = Query(None, max_length=256, description="admins: one tenant's traffic; users see their own"),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    shown = _scoped_tenant(principal, tenant)
    now = now_ms()
    now_s = now / 1000
    minute = bucket_of("1m", now_s)
    minute_keys = _bucket_keys("1m", range(minute - RECENT_MINUTES + 1, minute + 1), shown)
    plan = LimitPlan(state.settings)
    pairs = [("global", plan.global_)] + [(p, plan.provider(p)) for p in PROVIDERS]
    if shown is not None:
        pairs.append((f"tenant:{shown}", plan.tenant(shown)))
    bands = queue_kind_bounds(now)
    live_since = now - int(3 * state.settings.worker_lease_s * 1000)
    async with state.redis.pipeline(transaction=False) as pipe:
        for name in minute_keys:
            pipe.hgetall(name)
        for p in PROVIDERS:
            pipe.zcount(keys.worker_heartbeat(p), live_since, "+inf")
            for low, high in bands.values():
                pipe.zcount(keys.queue(p), low, high)
        for _, pair in pairs:
            pipe.hgetall(pair.requests.key)
            pipe.hgetall(pair.tokens.key)
        rows = await pipe.execute()
    recent = [Counter({k.decode(): int(v) for k, v in h.items()}) for h in rows[: len(minute_keys)]]
    rows = rows[len(minute_keys) :]
    window: Counter[str] = Counter()
    for c in recent:
        window.update(c)
    healths = await read_health(state.redis, PROVIDERS, state.settings, now)
    providers: dict[str, Any] = {}
    per_provider = 1 + len(bands)
    for i, p in enumerate(PROVIDERS):
        chunk = rows[i * per_provider : (i + 1) * per_provider]
        health = healths[p]
        requests, errors = _requests_of(window, p)
        histogram = histogram_from(window, p)
        p50, p95 = quantile_ms(histogram, 0.5), quantile_ms(histogram, 0.95)
        last_minute = [Counter({f: v for f, v in c.items() if f.startswith(f"n|{p}|")}) for c in recent]
        rate = sum(_per_minute(last_minute, f, now_s) for f in set().union(*last_minute))
        providers[p] = {
            "health": health.to_api(),
            "halfOpenInMs": _half_open_in(health.breaker, now),
            "requestsPerMin": round(rate, 2),
            "errorRate": round(errors / requests, 4) if requests else None,
            "p50Latency": round(p50, 1) if p50 is not None else None,
            "p95Latency": round(p95, 1) if p95 is not None else None,
            "liveWorkers": int(chunk[0]),
            "queue": {kind: int(n) for kind, n in zip(bands, chunk[1:], strict=True)},
        }
    limit_rows = rows[len(PROVIDERS) * per_provider :]
    limits = []
    for i, (scope, pair) in enumerate(pairs):
        limits.append(gauge(scope, "requests", pair.requests, limit_rows[2 * i], now))
        limits.append(gauge(scope, "tokens", pair.tokens, limit_rows[2 * i + 1], now))
    refused_fields = {f for c in recent for f in c if f.startswith("r|")}
    ended = sum(window.get(f, 0) for f in ("g|ok", "g|err", "g|hit"))
    data = {
        "now": now,
        "tenant": shown,
        "providers": providers,
        "limits": limits,
        "refusedPerMin": {f[2:]: _per_minute(recent, f, now_s) for f in sorted(refused_fields)},
        "cacheHitRate": round(window.get("g|hit", 0) / ended, 4) if ended else None,
    }
    return _ok(data)


def _half_open_in(breaker: BreakerSnapshot, now: int) -> int | None:
    if breaker.state is not BreakerState.OPEN:
        return None
    return max(breaker.open_until_ms - now, 0)


# -- charts ----------------------------------------------------------------------------------------


def _top(series: dict[str, list[float]], count: int) -> dict[str, list[float]]:
    """The `count` largest series by total; the others summed as "other"."""
    ranked = sorted(series, key=lambda name: (-sum(series[name]), name))
    out = {name: [round(v, 6) for v in series[name]] for name in ranked[:count]}
    rest = ranked[count:]
    if rest:
        length = len(next(iter(series.values())))
        out["other"] = [round(sum(series[n][i] for n in rest), 6) for i in range(length)]
    return out


def build_series(buckets: list[Counter[str]], show_tenants: bool) -> dict[str, Any]:
    """The charts' series from one counters hash per time bucket (oldest first)."""
    n = len(buckets)
    requests: dict[str, list[int]] = {p: [0] * n for p in PROVIDERS}
    errors: dict[str, list[int]] = {p: [0] * n for p in PROVIDERS}
    cost_model: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    cost_tenant: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    refused: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    hit_rate: list[float | None] = []
    latency: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for i, counters in enumerate(buckets):
        histogram: Counter[int] = Counter()
        for field, value in counters.items():
            kind, _, rest = field.partition("|")
            if kind == "n":
                provider, _, tail = rest.partition("|")
                code = tail.rpartition("|")[2]
                requests.setdefault(provider, [0] * n)[i] += value
                if code == "err":
                    errors.setdefault(provider, [0] * n)[i] += value
            elif kind == "c":
                cost_model[rest.replace("|", "/", 1)][i] += value / COST_UNIT
            elif kind == "u" and show_tenants:
                cost_tenant[rest][i] += value / COST_UNIT
            elif kind == "r":
                refused[rest][i] += value
            elif kind == "h":
                histogram[int(rest.rpartition("|")[2])] += value
        ended = sum(counters.get(f, 0) for f in ("g|ok", "g|err", "g|hit"))
        hit_rate.append(round(counters.get("g|hit", 0) / ended, 4) if ended else None)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value_ms = quantile_ms(histogram, q)
            latency[name].append(round(value_ms, 1) if value_ms is not None else None)
    return {
        "requests": requests,
        "errors": errors,
        "cacheHitRate": hit_rate,
        "latency": latency,
        "costByModel": _top(dict(cost_model), TOP_SERIES),
        "costByTenant": _top(dict(cost_tenant), TOP_SERIES),
        "refused": dict(refused),
    }


@router.get(
    "/series",
    summary="Chart series over the last hour (per minute) or day (per hour)",
    responses=ok(SeriesDoc),
)
async def series(
    period: Literal["hour", "day"] = Query("hour"),
    tenant: str | None = Query(None, max_length=256, description="admins: one tenant's figures; users see their own"),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    shown = _scoped_tenant(principal, tenant)
    resolution, count = PERIOD_BUCKETS[period]
    step = 60 if resolution == "1m" else 3600
    last = bucket_of(resolution, time.time())
    buckets = range(last - count + 1, last + 1)
    names = _bucket_keys(resolution, buckets, shown)
    async with state.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        hashes = await pipe.execute()
    counters = [Counter({k.decode(): int(v) for k, v in h.items()}) for h in hashes]
    figures = build_series(counters, show_tenants=shown is None)
    if shown is not None:  # a tenant's own buckets hold its spend: its one line is its models' sum
        by_model: dict[str, list[float]] = figures["costByModel"]
        figures["costByTenant"] = {shown: [round(sum(c), 6) for c in zip(*by_model.values(), strict=True)]}
    return _ok({"period": period, "tenant": shown, "times": [b * step for b in buckets], **figures})


# -- logs ------------------------------------------------------------------------------------------


def _log_matches(entry: Mapping[str, Any], model: str | None, tenant: str | None, status: str | None) -> bool:
    if model is not None and entry.get("model") != model:
        return False
    if tenant is not None and entry.get("tenant") != tenant:
        return False
    if status == "ok":
        return entry.get("type") == "response"
    if status == "error":
        return entry.get("type") == "error"
    return True


@router.get(
    "/logs",
    summary="The PII-masked request log, filtered and paged (users: their own tenant's entries)",
    responses=ok(ConsoleLogsDoc),
)
async def console_logs(
    request: Request,
    start_time: str | None = Query(None, alias="startTime", json_schema_extra=TIME_DOC),
    end_time: str | None = Query(None, alias="endTime", json_schema_extra=TIME_DOC),
    type: Literal["request", "response", "error"] | None = Query(None),
    provider: Provider | None = Query(None),
    model: str | None = Query(None, max_length=256),
    status: Literal["ok", "error"] | None = Query(None, description="ok: answers; error: errors"),
    tenant: str | None = Query(None, max_length=256, description="admins: one tenant's entries"),
    limit: int = Query(50, ge=1, le=MAX_READ),
    cursor: str | None = Query(None, pattern=r"^[0-9]{1,19}-[0-9]{1,19}$", description="nextCursor of the last page"),
    principal: Principal = Depends(current_principal),
) -> Response:
    shown = _scoped_tenant(principal, tenant)
    start_ms, end_ms = _time_ms(start_time, "startTime"), _time_ms(end_time, "endTime")
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise GatewayError(ErrorType.INVALID_REQUEST, "endTime is before startTime", param="endTime")
    reader: LogReader = request.app.state.log_reader
    kind = type or {"ok": "response", "error": "error"}.get(status or "")
    found: list[dict[str, Any]] = []
    next_cursor = cursor
    for _ in range(LOG_PAGES):
        page = await reader.read(
            start_ms=start_ms, end_ms=end_ms, kind=kind, provider=provider, limit=limit, cursor=next_cursor
        )
        for entry in page.entries:
            if _log_matches(entry, model, shown, status):
                found.append(entry)
                if len(found) == limit:
                    next_cursor = str(entry.get("id") or page.next_cursor)
                    break
        else:
            next_cursor = page.next_cursor
        if len(found) >= limit or next_cursor is None:
            break
    return _ok({"logs": found, "count": len(found), "nextCursor": next_cursor})


# -- batches ---------------------------------------------------------------------------------------


@router.get(
    "/batches",
    summary="Batches to follow: an admin's running batches of every tenant and its own; a user's own",
    responses=ok(ConsoleBatchesDoc),
)
async def console_batches(
    limit: int = Query(20, ge=1, le=100),
    state: AppState = Depends(get_state),
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    metas = await store.list_for(principal.subject, limit)
    if principal.is_admin:
        running = await state.redis.zrange(keys.batch_deadlines(), 0, ADMIN_BATCHES - 1)
        seen = {m.get("id") for m in metas}
        for raw in running:
            batch_id = raw.decode()
            if batch_id not in seen:
                meta = await store.meta(batch_id)
                if meta and meta.get("status") not in TERMINAL:
                    metas.append(meta)
    views = []
    for meta in metas:
        if "id" not in meta or meta.get("status") == "validating" or not principal.may_see(meta.get("tenant")):
            continue
        view = batch_view(meta, results_url(meta["id"]))
        view["tenant"] = meta.get("tenant")
        views.append(view)
    views.sort(key=lambda v: -(v.get("createdAt") or 0))
    return _ok({"batches": views})
