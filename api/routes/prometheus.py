"""Prometheus' `/metrics`, built at scrape time from the counters in Redis.

Nothing is counted in this process: every figure comes from the cumulative hash the workers write,
so any API process answers a scrape with the same numbers however many processes serve the gateway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.responses import Response

from api.auth import current_principal
from api.state import AppState, get_state
from shared import keys
from shared.alerts import active_alerts
from shared.metrics import COST_UNIT, LATENCY_BOUNDS_MS, PROMETHEUS_BOUND_STEP
from shared.queue import now_ms
from shared.routing import PROVIDERS

NAMESPACE = "llm_gateway"
_OUTCOME = {"ok": "success", "err": "error", "hit": "cache_hit"}


@dataclass
class Snapshot:
    """What one scrape read from Redis."""

    totals: Mapping[str, int]
    queue_depth: Mapping[str, int]
    live_workers: Mapping[str, int]
    alerts: list[dict[str, object]] = field(default_factory=list)


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
        hist: dict[str, dict[int, int]] = defaultdict(dict)
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
            elif kind == "l" and len(parts) >= 2:
                latency_us[parts[0]] += value
        yield from (requests, completed, errors, tokens, cost)
        latency = HistogramMetricFamily(
            f"{NAMESPACE}_request_latency_seconds", "Request latency from submission to outcome", labels=["provider"]
        )
        for provider, counts in sorted(hist.items()):
            latency.add_metric([provider], _cumulative(counts), sum_value=latency_us[provider] / 1e6)
        yield latency
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
        buckets.append((_le(LATENCY_BOUNDS_MS[i] / 1000), running))
    buckets.append(("+Inf", sum(counts.values())))
    return buckets


def _le(seconds: float) -> str:
    return f"{seconds:.6g}"


async def read_snapshot(state: AppState) -> Snapshot:
    now = now_ms()
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.metrics_totals())
        for provider in PROVIDERS:
            pipe.zcard(keys.queue(provider))
            pipe.zcount(keys.worker_heartbeat(provider), now - int(3 * state.settings.worker_lease_s * 1000), "+inf")
        replies = await pipe.execute()
    totals = {k.decode(): int(v) for k, v in replies[0].items()}
    depth = {p: int(replies[1 + 2 * i]) for i, p in enumerate(PROVIDERS)}
    live = {p: int(replies[2 + 2 * i]) for i, p in enumerate(PROVIDERS)}
    return Snapshot(totals, depth, live, await active_alerts(state.redis))


def exposition(snap: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


def build_router(public: bool) -> APIRouter:
    """`/metrics`, open to scrapers when `public`, else behind the API's authentication."""
    router = APIRouter(tags=["prometheus"], dependencies=[] if public else [Depends(current_principal)])

    @router.get("/metrics", summary="Prometheus exposition (text format)", include_in_schema=True)
    async def prometheus_metrics(state: AppState = Depends(get_state)) -> Response:
        body = exposition(await read_snapshot(state))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
