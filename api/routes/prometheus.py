"""Prometheus' `/metrics`, built at scrape time from the counters in Redis.

Nothing is counted in this process: every figure comes from the cumulative hash the workers write,
so any API process answers a scrape with the same numbers however many processes serve the gateway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson
from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse, Response

from api.auth import require_admin
from api.openapi_docs import GATEWAY_ERRORS_OF_TEXT_ROUTE
from api.state import AppState, get_state
from shared import keys
from shared.breaker import BreakerSnapshot, BreakerState
from shared.limits import Bucket, LimitPlan
from shared.metrics import COST_UNIT, LATENCY_BOUNDS_MS, PROMETHEUS_BOUND_STEP
from shared.queue import now_ms
from shared.routing import PROVIDERS
from shared.streams import open_streams

NAMESPACE = "llm_gateway"
_OUTCOME = {"ok": "success", "err": "error", "hit": "cache_hit", "can": "cancelled"}


@dataclass
class Snapshot:
    """What one scrape read from Redis."""

    totals: Mapping[str, int]
    queue_depth: Mapping[str, int]
    live_workers: Mapping[str, int]
    alerts: list[dict[str, object]] = field(default_factory=list)
    breakers: Mapping[str, BreakerSnapshot] = field(default_factory=dict)
    # (scope, unit) -> (units available, calls reported waiting)
    rate_limits: Mapping[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    streams_open: int = 0


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        totals = self.snap.totals
        requests = CounterMetricFamily(
            f"{NAMESPACE}_requests",
            "Requests ended, by provider, model and outcome",
            labels=["provider", "model", "outcome"],
        )
        completed = CounterMetricFamily(
            f"{NAMESPACE}_completed_requests",
            "Requests ended, counted once each (failover hops not)",
            labels=["outcome"],
        )
        errors = CounterMetricFamily(
            f"{NAMESPACE}_errors", "Failed requests by error type", labels=["provider", "type"]
        )
        tokens = CounterMetricFamily(f"{NAMESPACE}_tokens", "Tokens used", labels=["provider", "model", "kind"])
        cost = CounterMetricFamily(f"{NAMESPACE}_cost_usd", "Cost in USD", labels=["provider", "model"])
        fenced = CounterMetricFamily(
            f"{NAMESPACE}_fenced_jobs",
            "Jobs given up by a worker back from a pause past its lease: another worker had retaken them",
            labels=["provider"],
        )
        hist: dict[str, dict[int, int]] = defaultdict(dict)
        ttft: dict[str, dict[int, int]] = defaultdict(dict)
        ttft_us: dict[str, int] = defaultdict(int)
        latency_us: dict[str, int] = defaultdict(int)
        for name, value in totals.items():
            kind, _, rest = name.partition("|")
            parts = rest.split("|")
            if kind == "n" and len(parts) >= 3:
                requests.add_metric([parts[0], "|".join(parts[1:-1]), _OUTCOME.get(parts[-1], parts[-1])], value)
            elif kind == "g" and parts[0] in _OUTCOME:
                completed.add_metric([_OUTCOME[parts[0]]], value)
            elif kind == "e" and len(parts) == 2:
                errors.add_metric(parts, value)
            elif kind == "t" and len(parts) >= 3:
                label = "prompt" if parts[-1] == "in" else "completion"
                tokens.add_metric([parts[0], "|".join(parts[1:-1]), label], value)
            elif kind == "c" and len(parts) >= 2:
                cost.add_metric([parts[0], "|".join(parts[1:])], value / COST_UNIT)
            elif kind == "h" and len(parts) == 2:
                hist[parts[0]][int(parts[1])] = value
            elif kind == "f" and len(parts) == 2:
                ttft[parts[0]][int(parts[1])] = value
            elif kind == "fs" and len(parts) == 1:
                ttft_us[parts[0]] += value
            elif kind == "l" and len(parts) >= 2:
                latency_us[parts[0]] += value
            elif kind == "x" and len(parts) == 1:
                fenced.add_metric(parts, value)
        yield from (requests, completed, errors, tokens, cost, fenced)
        latency = HistogramMetricFamily(
            f"{NAMESPACE}_request_latency_seconds", "Request latency from submission to outcome", labels=["provider"]
        )
        for provider, counts in sorted(hist.items()):
            latency.add_metric([provider], _cumulative(counts), sum_value=latency_us[provider] / 1e6)
        yield latency
        first_token = HistogramMetricFamily(
            f"{NAMESPACE}_time_to_first_token_seconds",
            "Streamed calls' time from the provider call to its first delta",
            labels=["provider"],
        )
        for provider, counts in sorted(ttft.items()):
            first_token.add_metric([provider], _cumulative(counts), sum_value=ttft_us[provider] / 1e6)
        yield first_token
        streams = GaugeMetricFamily(f"{NAMESPACE}_streams_open", "Client streams open in the API processes")
        streams.add_metric([], self.snap.streams_open)
        yield streams
        depth = GaugeMetricFamily(
            f"{NAMESPACE}_queue_jobs", "Jobs on a provider's queue (waiting or running)", labels=["provider"]
        )
        workers = GaugeMetricFamily(f"{NAMESPACE}_workers", "Live worker processes", labels=["provider"])
        for provider in sorted(self.snap.queue_depth):
            depth.add_metric([provider], self.snap.queue_depth[provider])
            workers.add_metric([provider], self.snap.live_workers.get(provider, 0))
        yield depth
        yield workers
        alerts = GaugeMetricFamily(f"{NAMESPACE}_alerts_active", "Alerts in progress", labels=["type", "provider"])
        for alert in self.snap.alerts:
            alerts.add_metric([str(alert.get("type")), str(alert.get("provider") or "")], 1)
        yield alerts
        yield from self._breakers()
        yield from self._rate_limits()

    def _breakers(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            f"{NAMESPACE}_breaker_state", "Circuit breaker state (1 for the current one)", labels=["provider", "state"]
        )
        fails = GaugeMetricFamily(
            f"{NAMESPACE}_breaker_consecutive_failures", "Failures in a row counted by the breaker", labels=["provider"]
        )
        for provider, snap in sorted(self.snap.breakers.items()):
            for candidate in BreakerState:
                state.add_metric([provider, candidate.value], 1 if snap.state is candidate else 0)
            fails.add_metric([provider], snap.consecutive_failures)
        yield state
        yield fails

    def _rate_limits(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            f"{NAMESPACE}_rate_limit_available", "Units a token bucket holds now", labels=["scope", "unit"]
        )
        waiting = GaugeMetricFamily(
            f"{NAMESPACE}_rate_limit_waiting_calls", "Calls workers hold waiting for a bucket", labels=["scope"]
        )
        for (scope, unit), (level, waiters) in sorted(self.snap.rate_limits.items()):
            available.add_metric([scope, unit], level)
            if unit == "requests":
                waiting.add_metric([scope], waiters)
        yield available
        yield waiting


def _cumulative(counts: Mapping[int, int]) -> list[tuple[str, float]]:
    """Prometheus buckets at every fourth bound (powers of two ms): exact sums of ours."""
    buckets: list[tuple[str, float]] = []
    running = 0
    ordered = sorted(counts.items())
    j = 0
    for i in range(0, len(LATENCY_BOUNDS_MS), PROMETHEUS_BOUND_STEP):
        while j < len(ordered) and ordered[j][0] <= i:
            running += ordered[j][1]
            j += 1
        buckets.append((str(LATENCY_BOUNDS_MS[i] / 1000), running))
    buckets.append(("+Inf", sum(counts.values())))
    return buckets


def rate_limit_view(bucket: Bucket, raw: Mapping[bytes, bytes], now: int) -> tuple[float, int]:
    """A token bucket as the limits script keeps it: units available now, and calls gates reported
    waiting on it (`w:<gate>` = `count:expiry ms`). A missing bucket is full."""
    level, waiting = bucket.capacity, 0
    if b"v" in raw and b"t" in raw:
        elapsed = max(now - float(raw[b"t"]), 0.0)
        level = min(bucket.capacity, float(raw[b"v"]) + elapsed * bucket.rate_per_ms)
    for name, value in raw.items():
        if name.startswith(b"w:"):
            count, _, expiry = value.partition(b":")
            if expiry.isdigit() and int(expiry) > now:
                waiting += int(count)
    return level, waiting


async def read_snapshot(state: AppState) -> Snapshot:
    now = now_ms()
    plan = LimitPlan(state.settings)
    scopes = [("global", plan.global_)] + [(f"provider:{p}", plan.provider(p)) for p in PROVIDERS]
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.metrics_totals())
        for provider in PROVIDERS:
            pipe.zcard(keys.queue(provider))
            pipe.zcount(keys.worker_heartbeat(provider), now - int(3 * state.settings.worker_lease_s * 1000), "+inf")
            pipe.hgetall(keys.breaker(provider))
        for _, pair in scopes:
            pipe.hgetall(pair.requests.key)
            pipe.hgetall(pair.tokens.key)
        pipe.hgetall(keys.alerts_active())
        pipe.hgetall(keys.streams_open())
        replies = await pipe.execute()
    streams_open = open_streams(replies.pop(), now)
    totals = {k.decode(): int(v) for k, v in replies[0].items()}
    per_provider = replies[1 : 1 + 3 * len(PROVIDERS)]
    depth = {p: int(per_provider[3 * i]) for i, p in enumerate(PROVIDERS)}
    live = {p: int(per_provider[3 * i + 1]) for i, p in enumerate(PROVIDERS)}
    breakers = {p: BreakerSnapshot.from_hash(per_provider[3 * i + 2]) for i, p in enumerate(PROVIDERS)}
    limit_replies = replies[1 + 3 * len(PROVIDERS) : -1]
    limits: dict[tuple[str, str], tuple[float, int]] = {}
    for i, (scope, pair) in enumerate(scopes):
        limits[(scope, "requests")] = rate_limit_view(pair.requests, limit_replies[2 * i], now)
        limits[(scope, "tokens")] = rate_limit_view(pair.tokens, limit_replies[2 * i + 1], now)
    alerts = [orjson.loads(v) for v in replies[-1].values()]
    return Snapshot(totals, depth, live, alerts, breakers, limits, streams_open)


def exposition(snap: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


def build_router(public: bool) -> APIRouter:
    """`/metrics`, open to scrapers when `public`, else for admin tokens only: it is the operators' view
    of the whole gateway (every tenant's requests and spend summed, no tenant label), which a user
    token must not read any more than another tenant's figures in `/api/v1/llm/metrics`."""
    router = APIRouter(
        tags=["prometheus"],
        dependencies=[] if public else [Depends(require_admin)],
        responses=GATEWAY_ERRORS_OF_TEXT_ROUTE,
    )

    @router.get(
        "/metrics",
        summary="Prometheus exposition (text format)",
        include_in_schema=True,
        response_class=PlainTextResponse,
    )
    async def prometheus_metrics(state: AppState = Depends(get_state)) -> Response:
        body = exposition(await read_snapshot(state))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
