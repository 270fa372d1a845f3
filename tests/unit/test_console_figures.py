"""The console's figures against a real Redis: what the charts read off the metrics buckets (cost by
tenant, refusals, percentiles), the API's refusal counter and its flush, the queue bands by kind."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.refusals import RefusalCounter
from api.routes.console_data import build_series, queue_kind_bounds
from plumbing.round_trip import RoundTrip
from shared import keys, metrics
from shared.metrics import RequestRecord, bucket_of, record_refusals

pytestmark = pytest.mark.timeout(60)


async def _bucket(r: aioredis.Redis, name: str) -> Counter[str]:
    return Counter({k.decode(): int(v) for k, v in (await r.hgetall(name)).items()})


async def test_charts_read_cost_by_tenant_and_refusals_off_the_buckets(r: aioredis.Redis) -> None:
    now = time.time()
    trip = RoundTrip(r)
    records = [
        RequestRecord("openai", "gpt-4", "success", 100, 0.5, tenant="alice"),
        RequestRecord("openai", "gpt-4", "error", 300, error_type="timeout_error", tenant="alice"),
        RequestRecord("anthropic", "claude-3-opus", "success", 900, 2.0, tenant="bob|x"),
        RequestRecord("openai", "gpt-4", "cache_hit", 2, tenant="bob|x"),
    ]
    metrics.record_into(trip, records, now)
    await trip.send()
    await record_refusals(r, {("alice", "rate_limit_error"): 3, (None, "invalid_request_error"): 2}, now)

    minute = keys.metrics_bucket("1m", bucket_of("1m", now))
    series = build_series([Counter(), await _bucket(r, minute)], show_tenants=True)
    assert series["requests"] == {"openai": [0, 3], "anthropic": [0, 1]}
    assert series["errors"] == {"openai": [0, 1], "anthropic": [0, 0]}
    assert series["costByTenant"] == {"alice": [0, 0.5], "bob/x": [0, 2.0]}  # "|" never splits a name
    assert series["costByModel"] == {"anthropic/claude-3-opus": [0, 2.0], "openai/gpt-4": [0, 0.5]}
    assert series["refused"] == {"rate_limit_error": [0, 3], "invalid_request_error": [0, 2]}
    assert series["cacheHitRate"] == [None, 0.25]
    assert series["latency"]["p50"][0] is None
    assert series["latency"]["p99"][1] == pytest.approx(900, rel=0.2)

    # the tenant's own buckets count its refusals; the totals (Prometheus) hold no tenant's name
    alice = await _bucket(r, keys.metrics_tenant_bucket("1m", bucket_of("1m", now), "alice"))
    assert alice["r|rate_limit_error"] == 3 and "r|invalid_request_error" not in alice
    totals = await _bucket(r, keys.metrics_totals())
    assert totals["r|rate_limit_error"] == 3 and not any(f.startswith("u|") for f in totals)
    hour = await _bucket(r, keys.metrics_bucket("1h", bucket_of("1h", now)))
    assert hour["u|alice"] == 5 * 10**9  # 0.5 USD in 1e-10 USD


def test_a_user_s_series_shows_no_other_tenant() -> None:
    series = build_series([Counter({"u|alice": 10**10, "c|openai|gpt-4": 10**10})], show_tenants=False)
    assert series["costByTenant"] == {}


def test_the_cost_charts_keep_the_largest_series_and_sum_the_rest() -> None:
    bucket = Counter({f"u|t{i}": (i + 1) * 10**10 for i in range(12)})
    shown = build_series([bucket], show_tenants=True)["costByTenant"]
    assert list(shown)[:2] == ["t11", "t10"] and len(shown) == 9
    assert shown["other"] == [1 + 2 + 3 + 4]


async def test_refusals_are_summed_in_process_and_flushed_in_one_call(r: aioredis.Redis) -> None:
    counter = RefusalCounter()
    for _ in range(5):
        counter.count("rate_limit_error", "alice")
    counter.count("invalid_request_error")
    await r.config_resetstat()
    await counter.flush(r)
    assert (await r.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1
    assert counter.pending() == {}
    totals = await _bucket(r, keys.metrics_totals())
    assert totals["r|rate_limit_error"] == 5 and totals["r|invalid_request_error"] == 1
    await counter.flush(r)  # nothing to send: no call
    assert (await r.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1


async def test_counts_a_failed_send_could_not_deliver_are_kept() -> None:
    counter = RefusalCounter()
    counter.count("permission_error", "bob")
    unreachable = aioredis.Redis(port=1, socket_connect_timeout=0.5)
    with pytest.raises(RedisError):
        await counter.flush(unreachable)
    await unreachable.aclose()
    assert counter.pending() == {("bob", "permission_error"): 1}


def test_a_disabled_counter_counts_nothing() -> None:
    counter = RefusalCounter(enabled=False)
    counter.count("rate_limit_error", "alice")
    assert counter.pending() == {}


async def test_queue_bands_split_the_queue_by_kind(r: aioredis.Redis) -> None:
    now = int(time.time() * 1000)
    queue = keys.queue("openai")
    jobs = {"s1": ("sync", 0), "s2": ("sync", 5000), "a1": ("async", -60_000), "b1": ("batch", 0), "b2": ("batch", 9)}
    await r.zadd(queue, {job: now + delay - keys.PRIORITY_OFFSET_MS[kind] for job, (kind, delay) in jobs.items()})
    counts = {kind: await r.zcount(queue, low, high) for kind, (low, high) in queue_kind_bounds(now).items()}
    assert counts == {"sync": 2, "async": 1, "batch": 2}
