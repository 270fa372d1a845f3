"""shared.metrics and shared.request_log against a real Redis: exact counts under concurrent writer
processes, period and provider filters, p95 from the histogram, log reads, Prometheus output."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import textwrap
import time

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from api.routes.prometheus import Snapshot, exposition, rate_limit_view
from devstack.procs import ROOT
from plumbing.round_trip import RoundTrip
from shared import keys, metrics
from shared.breaker import BreakerSnapshot, BreakerState
from shared.limits import Bucket
from shared.metrics import LATENCY_BOUNDS_MS, RequestRecord, latency_bucket, period_summary, quantile_ms
from shared.pricing import catalogue_models
from shared.request_log import RequestLog

pytestmark = pytest.mark.timeout(120)


# -- counters ----------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from shared.metrics import RequestRecord, record

    async def main(url, seed, n):
        r = aioredis.Redis.from_url(url)
        for i in range(n):
            ok = (i + seed) % 5 != 0
            rec = RequestRecord(
                provider="openai" if i % 2 else "anthropic",
                model="gpt-4" if i % 2 else "claude-3-sonnet",
                outcome="success" if ok else "error",
                latency_ms=10 + (i * 7 + seed) % 300,
                cost_usd=0.0123 if ok else None,
                prompt_tokens=11 if ok else 0,
                completion_tokens=7 if ok else 0,
                error_type=None if ok else "timeout_error",
            )
            await record(r, rec)
        await r.aclose()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


def expected_for(seed: int, n: int) -> dict[str, float]:
    out = {"ok": 0, "err": 0, "lat": 0.0, "openai": 0}
    for i in range(n):
        ok = (i + seed) % 5 != 0
        out["ok" if ok else "err"] += 1
        out["lat"] += 10 + (i * 7 + seed) % 300
        out["openai"] += i % 2
    return out


async def test_concurrent_writer_processes_add_up_exactly(r: aioredis.Redis, redis_url: str) -> None:
    n, seeds = 400, [1, 2, 3, 4]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, redis_url, str(s), str(n)], cwd=ROOT) for s in seeds]
    for p in procs:
        assert p.wait(90) == 0
    want = [expected_for(s, n) for s in seeds]
    ok, err = sum(w["ok"] for w in want), sum(w["err"] for w in want)
    lat = sum(w["lat"] for w in want)

    data = await period_summary(r, "hour", "openai", uptime_s=1)
    gateway = data["gateway"]
    assert gateway["totalRequests"] == len(seeds) * n
    assert gateway["successfulRequests"] == ok
    assert gateway["failedRequests"] == err
    assert gateway["averageLatency"] == pytest.approx(lat / (len(seeds) * n), abs=0.01)
    assert gateway["totalCost"] == pytest.approx(ok * 0.0123, abs=1e-9)
    assert data["performance"]["totalRequests"] == sum(w["openai"] for w in want)

    totals = {k.decode(): int(v) for k, v in (await r.hgetall(keys.metrics_totals())).items()}
    assert totals["g|ok"] == ok and totals["g|err"] == err
    assert totals["t|openai|gpt-4|in"] + totals["t|anthropic|claude-3-sonnet|in"] == 11 * ok
    assert totals["e|openai|timeout_error"] + totals["e|anthropic|timeout_error"] == err


async def test_period_and_provider_filters(r: aioredis.Redis) -> None:
    now = time.time()

    def rec(provider: str, model: str, ms: float, cost: float | None = None) -> RequestRecord:
        return RequestRecord(provider, model, "success", ms, cost_usd=cost)

    await metrics.record(r, rec("openai", "gpt-4", 100, 0.5), rec("anthropic", "claude-3-opus", 300), now_s=now)
    await metrics.record(r, rec("openai", "gpt-4-turbo", 200, 1.0), now_s=now - 2 * 3600)  # day, not hour
    await metrics.record(r, rec("anthropic", "claude-3-haiku", 400), now_s=now - 3 * 86400)  # week only
    await metrics.record(r, rec("openai", "gpt-4", 1, 99.0), now_s=now - 9 * 86400)  # nothing

    hour = await period_summary(r, "hour", None, 1, now_s=now)
    day = await period_summary(r, "day", "openai", 1, now_s=now)
    week = await period_summary(r, "week", "anthropic", 1, now_s=now)

    assert hour["gateway"]["totalRequests"] == 2
    assert hour["performance"]["provider"] is None and hour["performance"]["totalRequests"] == 2
    assert day["gateway"]["totalRequests"] == 3
    assert day["gateway"]["totalCost"] == pytest.approx(1.5)
    assert day["performance"] == {
        "provider": "openai",
        "totalRequests": 2,
        "averageLatency": 150.0,
        "p95Latency": day["performance"]["p95Latency"],
        "streamedRequests": 0,
        "p50Ttft": 0,
        "p95Ttft": 0,
        "totalCost": 1.5,
        "topModels": [
            {"model": "gpt-4", "count": 1, "avgLatency": 100.0},
            {"model": "gpt-4-turbo", "count": 1, "avgLatency": 200.0},
        ],
    }
    assert week["gateway"]["totalRequests"] == 4
    assert week["performance"]["totalRequests"] == 2
    assert [m["model"] for m in week["performance"]["topModels"]] == ["claude-3-haiku", "claude-3-opus"]


async def test_a_failover_hop_counts_for_its_provider_but_the_request_once(r: aioredis.Redis) -> None:
    hop = RequestRecord("openai", "gpt-4", "error", 50, error_type="service_unavailable", final=False)
    end = RequestRecord("anthropic", "claude-3-opus", "success", 80, cost_usd=0.01)
    await metrics.record(r, hop, end)
    data = await period_summary(r, "hour", "openai", 1)
    assert data["gateway"]["totalRequests"] == 1 and data["gateway"]["successfulRequests"] == 1
    assert data["performance"]["totalRequests"] == 1


async def test_cache_hits_count_as_successes_that_cost_nothing(r: aioredis.Redis) -> None:
    await metrics.record_cache_hit(r, "openai", "gpt-4", 2.0)
    data = await period_summary(r, "hour", "openai", 1)
    assert data["gateway"]["successfulRequests"] == 1 and data["gateway"]["totalCost"] == 0
    assert data["performance"]["topModels"] == [{"model": "gpt-4", "count": 1, "avgLatency": 2.0}]


async def test_p95_is_within_one_histogram_bucket_of_the_truth(r: aioredis.Redis) -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(5.5, 0.8) for _ in range(2000)]
    for start in range(0, len(latencies), 200):
        batch = [RequestRecord("openai", "gpt-4", "success", ms) for ms in latencies[start : start + 200]]
        await metrics.record(r, *batch)
    true_p95 = sorted(latencies)[int(0.95 * len(latencies)) - 1]
    got = (await period_summary(r, "hour", "openai", 1))["performance"]["p95Latency"]
    assert abs(latency_bucket(got) - latency_bucket(true_p95)) <= 1, (got, true_p95)


def test_quantile_edges() -> None:
    assert quantile_ms({}, 0.95) is None
    assert quantile_ms({len(LATENCY_BOUNDS_MS): 3}, 0.95) == LATENCY_BOUNDS_MS[-1]
    assert quantile_ms({0: 10}, 0.5) == pytest.approx(0.5)  # sub-millisecond, interpolated from 0
    assert latency_bucket(LATENCY_BOUNDS_MS[10]) == 10  # bounds are inclusive, as Prometheus' `le`


async def test_each_tenant_sees_its_own_figures_the_gateway_all_of_them(r: aioredis.Redis) -> None:
    now = time.time()
    trip = RoundTrip(r)
    for tenant, ms, cost in (("alice", 100, 0.5), ("alice", 300, 0.25), ("bob", 900, 7.0)):
        metrics.record_into(trip, [RequestRecord("openai", "gpt-4", "success", ms, cost, tenant=tenant)], now)
    hop = RequestRecord("anthropic", "claude-3-opus", "error", 50, error_type="timeout", final=False, tenant="bob")
    metrics.record_into(trip, [hop], now)
    await r.config_resetstat()
    await trip.send()
    assert (await r.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1  # tenants add no round trip
    await metrics.record_cache_hit(r, "openai", "gpt-4", 2.0, tenant="alice", now_s=now)

    alice = await period_summary(r, "hour", None, 1, now_s=now, tenant="alice")
    bob = await period_summary(r, "week", "openai", 1, now_s=now, tenant="bob")
    everyone = await period_summary(r, "day", None, 1, now_s=now)
    assert alice["gateway"] == {**alice["gateway"], "totalRequests": 3, "successfulRequests": 3, "totalCost": 0.75}
    assert alice["performance"]["topModels"] == [{"model": "gpt-4", "count": 3, "avgLatency": 134.0}]
    assert bob["gateway"]["totalRequests"] == 1 and bob["gateway"]["totalCost"] == 7.0
    assert bob["performance"]["p95Latency"] == pytest.approx(900, rel=0.2)
    assert everyone["gateway"]["totalRequests"] == 4 and everyone["gateway"]["totalCost"] == 7.75
    carol = await period_summary(r, "day", None, 1, now_s=now, tenant="carol")  # sent nothing: sees nothing
    assert carol["gateway"]["totalRequests"] == 0 and carol["performance"]["topModels"] == []


async def test_a_lost_script_is_reloaded(r: aioredis.Redis) -> None:
    await r.script_flush()
    await metrics.record(r, RequestRecord("openai", "gpt-4", "success", 5))
    await r.script_flush()  # a restarted Redis: the worker's round trip meets NOSCRIPT
    trip = RoundTrip(r)
    metrics.record_into(trip, [RequestRecord("openai", "gpt-4", "success", 5)], time.time())
    assert await trip.send() == []  # the counters are the trip's own aggregate: no reply to its callers
    assert (await period_summary(r, "hour", None, 1))["gateway"]["totalRequests"] == 2


async def test_requests_recorded_on_one_round_trip_share_one_script_call(r: aioredis.Redis) -> None:
    trip = RoundTrip(r)
    now = time.time()
    for latency in (5, 7, 900):
        metrics.record_into(trip, [RequestRecord("openai", "gpt-4", "success", latency, prompt_tokens=10)], now)
    metrics.record_into(trip, [RequestRecord("anthropic", "claude-3-haiku", "error", 3, error_type="timeout")], now)
    await r.config_resetstat()
    await trip.send()
    assert (await r.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1
    summary = await period_summary(r, "hour", None, 1)
    assert (summary["gateway"]["totalRequests"], summary["gateway"]["failedRequests"]) == (4, 1)
    assert summary["gateway"]["averageLatency"] == pytest.approx((5 + 7 + 900 + 3) / 4, abs=0.01)


# -- request logs ------------------------------------------------------------------------------------


def entry(kind: str, provider: str = "openai", n: int = 0) -> dict[str, object]:
    return {"type": kind, "provider": provider, "requestId": f"r{n}", "content": "x" * 200}


async def test_log_reads_filter_by_time_type_and_provider_and_page(r: aioredis.Redis) -> None:
    log = RequestLog(r, retention_s=86400)
    base = int(time.time() * 1000) - 60_000
    for n in range(30):
        kind = ("request", "response", "error")[n % 3]
        await log.write(entry(kind, "openai" if n % 2 else "anthropic", n), now_ms=base + n * 1000)
    page = await log.read(start_ms=base + 10_000, end_ms=base + 19_000)
    assert [e["requestId"] for e in page.entries] == [f"r{n}" for n in range(10, 20)]
    errors = await log.read(kind="error", provider="openai")
    assert [e["requestId"] for e in errors.entries] == [f"r{n}" for n in range(30) if n % 3 == 2 and n % 2]
    first = await log.read(limit=7)
    second = await log.read(limit=100, cursor=first.next_cursor)
    assert [e["requestId"] for e in first.entries + second.entries] == [f"r{n}" for n in range(30)]
    assert second.next_cursor is None
    assert first.entries[0]["timestamp"].endswith("Z")


# -- Prometheus --------------------------------------------------------------------------------------


async def test_prometheus_exposition_parses_and_matches_the_counters(r: aioredis.Redis) -> None:
    await metrics.record(
        r,
        RequestRecord("openai", "gpt-4", "success", 3.0, cost_usd=0.06, prompt_tokens=500, completion_tokens=750),
        RequestRecord("openai", "gpt-4", "success", 3000.0, cost_usd=0.06),
        RequestRecord("anthropic", "claude-3-opus", "error", 40.0, error_type="rate_limit_error"),
    )
    totals = {k.decode(): int(v) for k, v in (await r.hgetall(keys.metrics_totals())).items()}
    breakers = {"openai": BreakerSnapshot(BreakerState.OPEN, 5, 0), "anthropic": BreakerSnapshot()}
    limits = {("provider:openai", "requests"): (12.5, 4), ("provider:openai", "tokens"): (900.0, 0)}
    snap = Snapshot(totals, {"openai": 3, "anthropic": 0}, {"openai": 1, "anthropic": 1}, [], breakers, limits)
    text = exposition(snap).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert (
        samples[("llm_gateway_requests_total", (("model", "gpt-4"), ("outcome", "success"), ("provider", "openai")))]
        == 2
    )
    assert samples[("llm_gateway_errors_total", (("provider", "anthropic"), ("type", "rate_limit_error")))] == 1
    assert samples[("llm_gateway_cost_usd_total", (("model", "gpt-4"), ("provider", "openai")))] == pytest.approx(0.12)
    assert (
        samples[("llm_gateway_tokens_total", (("kind", "completion"), ("model", "gpt-4"), ("provider", "openai")))]
        == 750
    )
    assert samples[("llm_gateway_queue_jobs", (("provider", "openai"),))] == 3
    hist = families["llm_gateway_request_latency_seconds"]
    buckets = {
        s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket") and s.labels["provider"] == "openai"
    }
    assert buckets["0.004"] == 1 and buckets["2.048"] == 1 and buckets["4.096"] == 2 and buckets["+Inf"] == 2
    count = next(s.value for s in hist.samples if s.name.endswith("_count") and s.labels["provider"] == "openai")
    assert count == 2
    assert samples[("llm_gateway_breaker_state", (("provider", "openai"), ("state", "open")))] == 1
    assert samples[("llm_gateway_breaker_state", (("provider", "openai"), ("state", "closed")))] == 0
    assert samples[("llm_gateway_breaker_state", (("provider", "anthropic"), ("state", "closed")))] == 1
    assert samples[("llm_gateway_rate_limit_waiting_calls", (("scope", "provider:openai"),))] == 4
    assert samples[("llm_gateway_rate_limit_available", (("scope", "provider:openai"), ("unit", "tokens")))] == 900
    assert json.dumps(text)  # plain text, nothing binary


def test_rate_limit_view_reads_what_the_limits_script_stores() -> None:
    bucket = Bucket("k", per_minute=60, capacity=60)
    assert rate_limit_view(bucket, {}, now=1000) == (60, 0)  # a missing bucket is full
    raw = {b"v": b"10", b"t": b"1000", b"w:gate-a": b"3:5000", b"w:gate-b": b"2:1500"}
    level, waiting = rate_limit_view(bucket, raw, now=3000)
    assert level == pytest.approx(12.0) and waiting == 3  # 2 s refilled 2 units; gate-b's report is stale


async def test_large_increments_stay_exact(r: aioredis.Redis) -> None:
    # 1e-10 USD units: $123,456.78 is a 16-digit increment, past what Lua prints as an integer
    await metrics.record(r, RequestRecord("openai", "gpt-4", "success", 9_000_000.0, cost_usd=123_456.78))
    data = await period_summary(r, "hour", "openai", 1)
    assert data["gateway"]["totalCost"] == 123_456.78 and data["performance"]["averageLatency"] == 9_000_000.0


# -- label cardinality (issue 14 item 9) ---------------------------------------------------------------


def _model_labels_in_exposition(totals: dict[str, int]) -> set[tuple[str, str]]:
    text = exposition(Snapshot(totals, {}, {})).decode()
    return {
        (s.labels["provider"], s.labels["model"])
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "model" in s.labels
    }


async def _totals(r: aioredis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await r.hgetall(keys.metrics_totals())).items()}


async def test_made_up_model_names_cannot_grow_metrics_without_bound(r: aioredis.Redis) -> None:
    # the attack: a caller cycles through 1,000 made-up names that the provider accepts
    for i in range(1000):
        await metrics.record(r, RequestRecord("openai", f"made-up-{i}", "success", 5, prompt_tokens=3))
    await metrics.record(
        r, RequestRecord("openai", "gpt-4", "success", 5), RequestRecord("anthropic", "x", "success", 5)
    )
    cap = metrics.DEFAULT_MAX_MODELS
    labels = _model_labels_in_exposition(await _totals(r))
    openai = {m for p, m in labels if p == "openai"}
    # the first `cap` names got labels of their own, the rest count as "other"; catalogue names keep theirs
    assert openai == {f"made-up-{i}" for i in range(cap)} | {"other", "gpt-4"}
    assert ("anthropic", "x") in labels  # the cap is per provider
    totals = await _totals(r)
    assert totals["n|openai|other|ok"] == 1000 - cap and totals["t|openai|other|in"] == 3 * (1000 - cap)
    assert totals["n|openai|gpt-4|ok"] == 1
    # Redis: the same four keys whatever the names, each with bounded fields
    assert len(await r.keys("*")) == 4
    assert await r.hlen(keys.metrics_models()) == cap + 1 + 2  # openai's, anthropic's "x", two counts
    assert len(totals) < 4 * (cap + 10) + len(LATENCY_BOUNDS_MS)
    data = await period_summary(r, "hour", "openai", 1)
    assert data["gateway"]["totalRequests"] == 1002  # nothing lost, only folded


async def test_only_successes_admit_names_and_the_cap_holds_under_concurrency(r: aioredis.Redis) -> None:
    labels = metrics.ModelLabels(frozenset({"gpt-4"}), max_models=10)

    def rec(model: str, outcome: metrics.Outcome = "success") -> RequestRecord:
        return RequestRecord("openai", model, outcome, 5, error_type="invalid_request" if outcome == "error" else None)

    # refused names and cache hits admit nothing: they count as "other" while there is room
    await metrics.record(r, *(rec(f"typo-{i}", "error") for i in range(20)), labels=labels)
    await metrics.record(r, rec("cached-only", "cache_hit"), labels=labels)
    assert await r.hlen(keys.metrics_models()) == 0
    assert (await _totals(r))["n|openai|other|err"] == 20
    # 200 concurrent writers race for 10 places: exactly 10 win (the script admits atomically)
    await asyncio.gather(*(metrics.record(r, rec(f"new-{i}"), labels=labels) for i in range(200)))
    admitted = {f.decode() for f in await r.hkeys(keys.metrics_models())} - {"#openai"}
    assert len(admitted) == 10 and int(await r.hget(keys.metrics_models(), "#openai")) == 10
    # an admitted name then keeps its label for errors and cache hits too; a catalogue name always has one
    name = sorted(admitted)[0].split("|", 1)[1]
    trip = RoundTrip(r)
    metrics.record_into(trip, [rec(name, "error"), rec(name, "cache_hit"), rec("gpt-4", "error")], time.time(), labels)
    await trip.send()
    totals = await _totals(r)
    assert totals[f"n|openai|{name}|err"] == 1 and totals[f"n|openai|{name}|hit"] == 1
    assert totals["n|openai|gpt-4|err"] == 1 and totals["n|openai|other|ok"] == 190
    # a name longer than a request may send is never a label
    await metrics.record(r, rec("x" * 500), labels=metrics.ModelLabels(frozenset(), max_models=1000))
    assert (await _totals(r))["n|openai|other|ok"] == 191


async def test_a_tenant_s_view_labels_made_up_models_as_the_gateway_s_does(r: aioredis.Redis) -> None:
    """Tenant buckets take the label the script gave the gateway's counters: an admitted name keeps
    its own, one past the cap is `other` in both views, so a tenant cannot grow its own hashes either."""
    labels = metrics.ModelLabels(frozenset({"gpt-4"}), max_models=1)
    now = time.time()
    trip = RoundTrip(r)
    for model in ("first-made-up", "second-made-up", "gpt-4"):
        metrics.record_into(trip, [RequestRecord("openai", model, "success", 10, 0.5, tenant="mallory")], now, labels)
    await trip.send()
    mine = await period_summary(r, "hour", "openai", 1, now_s=now, tenant="mallory")
    everyone = await period_summary(r, "hour", "openai", 1, now_s=now)
    assert mine["performance"]["topModels"] == everyone["performance"]["topModels"]
    assert {m["model"] for m in mine["performance"]["topModels"]} == {"first-made-up", "other", "gpt-4"}
    assert mine["gateway"]["totalRequests"] == 3 and mine["gateway"]["totalCost"] == 1.5
    tenant_fields = await r.hkeys(keys.metrics_tenant_bucket("1m", metrics.bucket_of("1m", now), "mallory"))
    assert not any(b"second-made-up" in f for f in tenant_fields)


def test_the_catalogue_is_the_price_tables_and_the_configuration() -> None:
    from shared.settings import Settings

    settings = Settings(
        failover_model_map={"my-gpt": "my-claude"},
        price_overrides={"house-model": {"input": 0.01, "output": 0.02}},
        metrics_max_models=7,
    )
    labels = metrics.model_labels(settings)
    assert {"gpt-4", "claude-3-haiku", "my-gpt", "my-claude", "house-model"} <= labels.known
    assert "gpt-4-0613" not in labels.known or "gpt-4-0613" in catalogue_models()  # exact names only
    assert "GPT-4" not in labels.known and labels.max_models == 7
    assert metrics.model_labels(settings) is labels  # built once per settings object


async def test_streamed_requests_count_their_time_to_first_token_and_cancellations(r: aioredis.Redis) -> None:
    now = 1_700_000_000.0
    streamed = [
        metrics.RequestRecord("openai", "gpt-4", "success", 300, ttft_ms=ttft, tenant="alice") for ttft in (10, 20, 400)
    ]
    gone = metrics.RequestRecord("openai", "gpt-4", "cancelled", 50, ttft_ms=5, completion_tokens=7)
    await metrics.record(r, *streamed, gone, metrics.RequestRecord("openai", "gpt-4", "success", 30), now_s=now)
    summary = await period_summary(r, "hour", "openai", 1, now_s=now)
    assert summary["gateway"]["cancelledRequests"] == 1 and summary["gateway"]["totalRequests"] == 5
    performance = summary["performance"]
    assert performance["streamedRequests"] == 4
    assert performance["p50Ttft"] == pytest.approx(10, rel=0.2)
    assert performance["p95Ttft"] == pytest.approx(400, rel=0.2)
    mine = await period_summary(r, "hour", "openai", 1, now_s=now, tenant="alice")
    assert mine["performance"]["streamedRequests"] == 3
