"""The token-bucket script, the worker's admission gate and guard, the API's admission, the settings.

Against a real Redis of the module's own (fakeredis has no Lua here). Rates in these tests are either
far slower than the test (nothing refills meanwhile) or far faster, so no assertion depends on speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Coroutine

import orjson
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.crc import key_slot

from api.rate_limits import ApiLimiter
from devstack.procs import ROOT
from plumbing.round_trip import RoundTrip
from shared import keys
from shared.errors import ErrorType, GatewayError
from shared.limits import Bucket, BucketStore, Draw, LimitPlan, tenant_scope
from shared.queue import RequestQueue, now_ms
from shared.schemas import JobPayload, ProviderCall, ProviderResult, Usage
from shared.settings import Settings
from shared.token_estimate import completion_budget, estimate_call, prompt_tokens
from workers.guard import NOTHING, ChainGuard, Settlement, settle_now
from workers.limits_guard import AdmissionGate, LimitsGuard, TenantReconciler, _Call
from workers.observer import Finished

pytestmark = pytest.mark.timeout(60)

SLOW = 0.001  # per minute: nothing refills during a test
HOUR_MS = 3_600_000


def bucket(name: str, capacity: float, per_minute: float = SLOW) -> Bucket:
    return Bucket(keys.rate_bucket(name, "req"), per_minute, capacity)


async def level(r: aioredis.Redis, b: Bucket) -> float:
    raw = await r.hget(b.key, "v")  # type: ignore[misc]
    return b.capacity if raw is None else float(raw)


def slow_settings(redis_url: str, **extra: object) -> Settings:
    """Token buckets of 100,000 tokens that refill one token a minute."""
    base: dict[str, object] = {
        "redis_url": redis_url,
        "rate_limit_global_tpm": 1,
        "rate_limit_openai_tpm": 1,
        "rate_limit_anthropic_tpm": 1,
        "rate_limit_global_rpm": 1,
        "rate_limit_openai_rpm": 1,
        "rate_limit_anthropic_rpm": 1,
        "rate_limit_burst_s": 6_000_000,
        "tenant_default_rpm": 1,
        "tenant_default_tpm": 1,
        "tenant_burst_s": 6_000_000,
        "rate_limit_default_completion_tokens": 500,
        **extra,
    }
    return Settings(**base)  # type: ignore[arg-type]


def call(content: str = "x" * 40, max_tokens: int | None = 100) -> ProviderCall:
    return ProviderCall(model="gpt-4", messages=[{"role": "user", "content": content}], max_tokens=max_tokens)


# -- keys ------------------------------------------------------------------------------------------


def test_every_bucket_of_a_request_shares_one_cluster_slot() -> None:
    plan = LimitPlan(Settings())
    draws = [*plan.call_draws("openai", 10), Draw(plan.tenant("alice").requests, 1)]
    slots = {key_slot(d.bucket.key.encode()) for d in draws}
    assert len(slots) == 1
    assert all("{rl}" in d.bucket.key for d in draws)


def test_tenant_scope_is_bounded_and_keeps_the_hash_tag() -> None:
    assert tenant_scope("alice") == "tenant:alice"
    odd = tenant_scope("{evil}" + "x" * 500)
    assert odd.startswith("tenant:#") and len(odd) < 50
    assert key_slot(keys.rate_bucket(odd, "req").encode()) == key_slot(keys.rate_bucket("global", "req").encode())


# -- the script ------------------------------------------------------------------------------------


async def test_takes_until_empty_then_answers_the_wait(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    b = bucket("a", capacity=2, per_minute=6)  # one request per 10 s
    assert (await store.draw([Draw(b, 1)])).ok
    assert (await store.draw([Draw(b, 1)])).ok
    refused = await store.draw([Draw(b, 1)])
    assert refused.status == "take"
    assert refused.take_blocker == 0
    assert 9_000 < refused.take_wait_ms <= 10_000
    assert await level(r, b) < 0.1  # a refusal takes nothing


async def test_all_or_nothing_across_buckets(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    full, empty = bucket("full", 10), bucket("empty", 1)
    await store.draw([Draw(empty, 1)])
    refused = await store.draw([Draw(full, 3), Draw(empty, 1)])
    assert refused.status == "take" and refused.take_blocker == 1
    assert await level(r, full) == 10
    assert [s.level for s in refused.states] == [10, 0]


async def test_a_cost_above_capacity_waits_for_a_full_bucket_and_leaves_debt(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    b = bucket("big", capacity=10)
    assert (await store.draw([Draw(b, 25)])).ok
    assert await level(r, b) == pytest.approx(-15, abs=0.01)
    again = await store.draw([Draw(b, 1)])
    assert again.status == "take"
    assert again.states[0].level == -15


async def adjust(r: aioredis.Redis, store: BucketStore, draws: list[Draw]) -> None:
    trip = RoundTrip(r)
    store.adjust(trip, draws)
    await trip.send()


async def observe(r: aioredis.Redis, observer: TenantReconciler, event: Finished) -> None:
    trip = RoundTrip(r)
    observer.on_finished(event, trip)
    await trip.send()


async def test_refunds_never_lift_a_bucket_above_capacity(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    b = bucket("refund", capacity=100)
    await store.draw([Draw(b, 30)])
    await adjust(r, store, [Draw(b, -10)])
    assert await level(r, b) == pytest.approx(80, abs=0.01)
    await adjust(r, store, [Draw(b, -500)])
    assert await level(r, b) == pytest.approx(100, abs=0.01)
    await adjust(r, store, [Draw(b, 250)])  # a charge goes through even into debt
    assert await level(r, b) == pytest.approx(-150, abs=0.01)


async def test_calls_settled_on_one_round_trip_adjust_each_bucket_once(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    a, b = bucket("adjust-a", capacity=1000), bucket("adjust-b", capacity=1000)
    await store.draw([Draw(a, 500), Draw(b, 500)])
    trip = RoundTrip(r)
    store.adjust(trip, [Draw(a, -100), Draw(b, 40)])  # one call used less than estimated, one more
    store.adjust(trip, [Draw(a, 30)])
    store.adjust(trip, [Draw(b, -40)])  # b's changes cancel out: not touched at all
    await r.config_resetstat()
    await trip.send()
    assert (await r.info("commandstats"))["cmdstat_evalsha"]["calls"] == 1
    assert await level(r, a) == pytest.approx(570, abs=0.01)
    assert await level(r, b) == pytest.approx(500, abs=0.01)


async def test_refill_is_continuous_and_the_key_expires_once_full(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    fast = bucket("fast", capacity=5, per_minute=60_000_000)  # a thousand a millisecond
    for _ in range(3):
        assert (await store.draw([Draw(fast, 5)])).ok  # refilled in full between calls
    assert 0 < await r.pttl(fast.key) <= 2_000


async def test_a_bucket_key_lives_until_it_would_be_full_again_and_is_never_cut_short(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    slow = bucket("slow", capacity=100, per_minute=60)  # one unit a second
    assert (await store.draw([Draw(slow, 10)])).ok
    assert 10_000 < await r.pttl(slow.key) <= 11_000  # 10 s to refill, plus a second
    assert (await store.draw([Draw(slow, 20)])).ok
    assert 30_000 < await r.pttl(slow.key) <= 31_000  # a take extends it
    trip = RoundTrip(r)
    store.adjust(trip, [Draw(slow, -25)])  # a refund: full again sooner
    await trip.send()
    assert 29_000 < await r.pttl(slow.key) <= 31_000  # but the expiry is not shortened
    await r.persist(slow.key)  # a key that lost its expiry (a gate's report made it) gets one again
    assert (await store.draw([Draw(slow, 1)])).ok
    assert 0 < await r.pttl(slow.key) <= 7_000


async def test_peek_counts_the_waiters_gates_reported(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    b = bucket("shared", capacity=1, per_minute=6)
    assert (await store.draw([Draw(b, 1, "tw")], gate="w1", holding=1)).ok
    # two gates queue behind an empty bucket: 4 calls in one, 2 in the other
    assert (await store.draw([Draw(b, 1, "tw")], gate="w1", holding=4)).status == "take"
    assert (await store.draw([Draw(b, 1, "tw")], gate="w2", holding=2)).status == "take"
    peek = await store.draw([Draw(b, 1, "pw")], max_peek_wait_ms=1_000)
    assert peek.status == "peek" and peek.states[0].ahead == 6
    assert 60_000 < peek.peek_wait_ms <= 70_000  # 7 requests at one per 10 s, the first almost due
    assert await level(r, b) < 0.1  # peeking takes nothing
    # a gate that empties takes its count back
    await r.hset(b.key, mapping={"v": "1", "t": "0"})  # type: ignore[misc]
    assert (await store.draw([Draw(b, 1, "tw")], gate="w2", holding=1)).ok
    assert (await store.draw([Draw(b, 0, "pw")])).states[0].ahead == 4


async def test_a_peek_within_the_allowed_wait_lets_the_takes_happen(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    quota, provider = bucket("quota", 5), bucket("prov", capacity=1, per_minute=6)
    await store.draw([Draw(provider, 1)])
    ok = await store.draw([Draw(quota, 1), Draw(provider, 1, "p")], max_peek_wait_ms=20_000)
    assert ok.ok and await level(r, quota) == pytest.approx(4, abs=0.01)
    refused = await store.draw([Draw(quota, 1), Draw(provider, 1, "p")], max_peek_wait_ms=1_000)
    assert refused.status == "peek" and refused.peek_blocker == 1
    assert await level(r, quota) == pytest.approx(4, abs=0.01)


async def test_a_peek_at_a_cost_above_capacity_waits_for_a_full_bucket_like_a_take(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    tokens = bucket("tokens", capacity=10)
    assert (await store.draw([Draw(tokens, 25, "p")], max_peek_wait_ms=0)).ok  # full: a take would pass now
    await store.draw([Draw(tokens, 1)])
    assert (await store.draw([Draw(tokens, 25, "p")], max_peek_wait_ms=0)).status == "peek"


# -- the worker's gate ------------------------------------------------------------------------------


async def test_the_gate_asks_one_at_a_time_in_arrival_order() -> None:
    gate = AdmissionGate()
    asking = 0
    most = 0
    admitted: list[int] = []
    tickets = 0

    def asker(i: int) -> Coroutine[None, None, None]:
        async def ask(holding: int) -> tuple[bool, float]:
            nonlocal asking, most, tickets
            asking += 1
            most = max(most, asking)
            await asyncio.sleep(0)
            asking -= 1
            tickets += 1
            # by turns: refused ("ask again in 1 ms"), reserved 1 ms ahead, granted at once
            return [(False, 0.001), (True, 0.001), (True, 0.0)][tickets % 3]

        async def run() -> None:
            await gate.enter(ask)
            admitted.append(i)

        return run()

    await asyncio.gather(*(asker(i) for i in range(20)))
    assert most == 1
    assert admitted == list(range(20))
    assert gate.holding == 0


async def test_the_gate_tells_redis_how_many_calls_it_holds() -> None:
    gate = AdmissionGate()
    seen: list[int] = []
    release = asyncio.Event()

    async def ask(holding: int) -> tuple[bool, float]:
        seen.append(holding)
        await release.wait()
        return (False, 0.001) if len(seen) == 1 else (True, 0.0)  # the first ask is told to wait

    tasks = [asyncio.create_task(gate.enter(ask)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    # alone at first; after its wait the head counts the two that queued behind it meanwhile
    assert seen == [1, 3, 2, 1]


# -- the worker's guard: reserve, then reconcile -----------------------------------------------------


async def provider_tokens(r: aioredis.Redis, plan: LimitPlan, provider: str = "openai") -> tuple[float, float]:
    p = plan.provider(provider)
    return await level(r, plan.global_.tokens), await level(r, p.tokens)


async def test_guard_refunds_unused_tokens_and_charges_overruns(r: aioredis.Redis, redis_url: str) -> None:
    settings = slow_settings(redis_url)
    guard = LimitsGuard(r, settings, gate_id="test")
    cap = guard.plan.global_.tokens.capacity
    estimate = estimate_call(call(), "openai", settings)
    assert estimate == prompt_tokens(call().messages) + 100

    admission = await guard.admit("openai", call())
    g, p = await provider_tokens(r, guard.plan)
    assert g == pytest.approx(cap - estimate, abs=0.5) and p == pytest.approx(cap - estimate, abs=0.5)
    await settle_now(r, admission, Usage(prompt_tokens=13, completion_tokens=20), None, 5.0)
    g, p = await provider_tokens(r, guard.plan)
    assert g == pytest.approx(cap - 33, abs=0.5) and p == pytest.approx(cap - 33, abs=0.5)

    over = await guard.admit("openai", call())
    await settle_now(r, over, Usage(prompt_tokens=13, completion_tokens=estimate + 100), None, 5.0)  # charged
    g, _ = await provider_tokens(r, guard.plan)
    assert g == pytest.approx(cap - 33 - 13 - estimate - 100, abs=0.5)
    requests_level = await level(r, guard.plan.provider("openai").requests)
    assert requests_level == pytest.approx(guard.plan.provider("openai").requests.capacity - 2, abs=0.01)


async def test_guard_failed_and_unmade_calls(r: aioredis.Redis, redis_url: str) -> None:
    settings = slow_settings(redis_url)
    guard = LimitsGuard(r, settings, gate_id="test")
    plan = guard.plan
    req_cap = plan.provider("anthropic").requests.capacity
    tok_cap = plan.provider("anthropic").tokens.capacity
    failed = await guard.admit("anthropic", call(max_tokens=None))
    provider_error = GatewayError(ErrorType.SERVICE_UNAVAILABLE, "down", provider="anthropic")
    await settle_now(r, failed, None, provider_error, 3.0)
    # a failed call used no tokens, but it was a call: its request stays taken
    assert await level(r, plan.provider("anthropic").tokens) == pytest.approx(tok_cap, abs=0.5)
    assert await level(r, plan.provider("anthropic").requests) == pytest.approx(req_cap - 1, abs=0.01)
    unmade = await guard.admit("anthropic", call())
    await settle_now(r, unmade, None, GatewayError(ErrorType.CANCELLED, "not made"), 0.0)
    assert await level(r, plan.provider("anthropic").requests) == pytest.approx(req_cap - 1, abs=0.01)


async def test_a_take_within_its_allowed_wait_is_a_reservation(r: aioredis.Redis) -> None:
    store = BucketStore(r)
    b = bucket("reserve", capacity=1, per_minute=6)  # one per 10 s
    assert (await store.draw([Draw(b, 1)])).ok
    first = await store.draw([Draw(b, 1)], max_take_wait_ms=60_000)
    assert first.ok and 9_000 < first.take_wait_ms <= 10_000  # taken now, to be used in ~10 s
    second = await store.draw([Draw(b, 1)], max_take_wait_ms=60_000)
    assert second.ok and 19_000 < second.take_wait_ms <= 20_000  # scheduled after the first
    beyond = await store.draw([Draw(b, 1)], max_take_wait_ms=25_000)
    assert beyond.status == "take" and 29_000 < beyond.take_wait_ms <= 30_000
    assert await level(r, b) == pytest.approx(-2, abs=0.01)


async def test_a_reservation_given_up_is_given_back(r: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(
        redis_url=redis_url, rate_limit_openai_rpm=6, rate_limit_burst_s=10, rate_limit_global_rpm=10**6
    )  # OpenAI: a bucket of 1, one more every 10 s
    guard = LimitsGuard(r, settings, gate_id="test")
    requests = guard.plan.provider("openai").requests
    tokens = guard.plan.provider("openai").tokens
    await guard.admit("openai", call())
    waiting = asyncio.create_task(guard.admit("openai", call()))  # reserves ~10 s ahead, then sleeps
    for _ in range(500):
        if await level(r, requests) < -0.5:
            break
        await asyncio.sleep(0.01)
    assert await level(r, requests) == pytest.approx(-1, abs=0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await level(r, requests) == pytest.approx(0, abs=0.01)
    estimate = estimate_call(call(), "openai", settings)
    assert await level(r, tokens) >= tokens.capacity - estimate - 0.5  # only the first call's are taken
    assert guard.gate.holding == 0


async def test_guard_waits_for_capacity_instead_of_failing(r: aioredis.Redis, redis_url: str) -> None:
    # 6,000 a minute, bucket of 2: the third and fourth calls wait about 10 ms each, nobody fails
    settings = Settings(
        redis_url=redis_url, rate_limit_openai_rpm=6_000, rate_limit_burst_s=0.02, rate_limit_global_rpm=10**8
    )
    guard = LimitsGuard(r, settings, gate_id="test")
    admissions = await asyncio.gather(*(guard.admit("openai", call()) for _ in range(4)))
    assert len(admissions) == 4
    assert guard.gate.holding == 0


async def test_tenant_reconciler_settles_the_api_reservation(r: aioredis.Redis, redis_url: str) -> None:
    settings = slow_settings(redis_url)
    reconciler = TenantReconciler(r, settings)
    tokens = reconciler.plan.tenant("bob").tokens
    payload = JobPayload(request_id="r1", provider="openai", call=call(max_tokens=None), tenant="bob")
    estimate = estimate_call(payload.call, "openai", settings)
    await BucketStore(r).draw([Draw(tokens, estimate)])  # what the API took
    result = ProviderResult(content="hi", finish_reason="stop", usage=Usage(11, 7), model="gpt-4")
    await observe(r, reconciler, Finished(payload, "openai", 5.0, result=result))
    assert await level(r, tokens) == pytest.approx(tokens.capacity - 18, abs=0.5)
    # a hop that failed over leaves the settling to the next one
    await BucketStore(r).draw([Draw(tokens, estimate)])
    await observe(r, reconciler, Finished(payload, "openai", 5.0, failed_over=True))
    assert await level(r, tokens) == pytest.approx(tokens.capacity - 18 - estimate, abs=0.5)


# -- the chain ----------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Recorder:
        if self.refuse:
            self.log.append(f"{self.name} refused")
            raise GatewayError(ErrorType.RATE_LIMIT, "no")
        self.log.append(f"{self.name} admitted")
        return self

    def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> Settlement:
        self.log.append(f"{self.name} settled {'ok' if error is None else error.type.value}")
        return NOTHING


async def test_chain_admits_in_order_and_settles_the_earlier_guards_when_a_later_one_refuses(
    r: aioredis.Redis,
) -> None:
    log: list[str] = []
    chain = ChainGuard(r, Recorder("breaker", log), Recorder("limits", log))
    admission = await chain.admit("openai", call())
    await settle_now(r, admission, Usage(1, 1), None, 1.0)
    assert log == ["breaker admitted", "limits admitted", "limits settled ok", "breaker settled ok"]
    log.clear()
    refusing = ChainGuard(r, Recorder("breaker", log), Recorder("limits", log, refuse=True))
    with pytest.raises(GatewayError):
        await refusing.admit("openai", call())
    assert log == ["breaker admitted", "limits refused", "breaker settled rate_limit_error"]


# -- the API's admission -----------------------------------------------------------------------------


def payload(provider: str = "openai", tenant: str = "alice") -> JobPayload:
    return JobPayload(request_id="r", provider=provider, call=call(max_tokens=10), tenant=tenant)


async def test_api_refuses_a_tenant_over_quota_with_retry_after(r: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(
        redis_url=redis_url,
        tenant_quotas={"alice": {"rpm": 2}},
        tenant_default_rpm=1000,
        rate_limit_openai_rpm=600,
    )
    limiter = ApiLimiter(RequestQueue(r), settings)
    first = await limiter.admit(payload())
    assert first.refusal is None
    assert first.headers["X-RateLimit-Limit"] == "600"
    assert first.headers["X-RateLimit-Provider"] == "openai"
    assert (await limiter.admit(payload())).refusal is None
    third = await limiter.admit(payload())
    assert third.refusal is not None and third.refusal.status_code == 429
    assert 25 <= int(third.refusal.headers["Retry-After"]) <= 30  # one request per 30 s
    body = orjson.loads(bytes(third.refusal.body))
    assert body["error"]["type"] == "rate_limit_error" and body["error"]["retryable"] is True
    assert "alice" in body["error"]["message"] and "requests/min" in body["error"]["message"]
    assert (await limiter.admit(payload(tenant="bob"))).refusal is None  # others are unaffected


async def test_api_refuses_a_sync_request_that_would_wait_past_its_timeout(r: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, rate_limit_openai_rpm=60, rate_limit_burst_s=1)
    limiter = ApiLimiter(RequestQueue(r), settings)
    plan = limiter.plan
    store = BucketStore(r)
    await store.draw([Draw(plan.provider("openai").requests, 1, "tw")], gate="w", holding=1)
    await store.draw([Draw(plan.provider("openai").requests, 1, "tw")], gate="w", holding=5)  # 5 queue
    refused = await limiter.admit(payload(), max_wait_s=2)
    assert refused.refusal is not None and refused.refusal.status_code == 429
    assert 5 <= int(refused.refusal.headers["Retry-After"]) <= 6
    assert refused.refusal.headers["X-RateLimit-Remaining"] == "0"
    # a job (no timeout) and a patient synchronous request are both admitted to wait in the queue
    assert (await limiter.admit(payload())).refusal is None
    assert (await limiter.admit(payload(), max_wait_s=30)).refusal is None
    # the tenant was charged for the two admitted, not for the refused one
    tenant_requests = plan.tenant("alice").requests
    assert await level(r, tenant_requests) == pytest.approx(tenant_requests.capacity - 2, abs=0.01)


async def test_headers_count_down_and_reset_when_the_bucket_is_full_again(r: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, rate_limit_anthropic_rpm=60)  # capacity 60 (a minute's worth)
    limiter = ApiLimiter(RequestQueue(r), settings)
    store = BucketStore(r)
    bucket_ = limiter.plan.provider("anthropic").requests
    await store.draw([Draw(bucket_, 15)])
    secs, micros = await r.time()
    before_ms = secs * 1000 + micros // 1000
    admitted = await limiter.admit(payload("anthropic"))
    h = admitted.headers
    assert h["X-RateLimit-Limit"] == "60" and h["X-RateLimit-Provider"] == "anthropic"
    assert int(h["X-RateLimit-Remaining"]) == 44  # 45 left, one of them for this request
    # full again once the 16 missing requests have refilled, at one a second
    assert 16_000 <= int(h["X-RateLimit-Reset"]) - before_ms <= 17_000


async def enqueued(r: aioredis.Redis, p: JobPayload) -> tuple[dict[bytes, bytes], float | None, bool]:
    """What the queue holds of a request: its record, its hop 0's score on the queue, its arq job."""
    jid = keys.job_id(p.request_id, 0)
    record = await r.hgetall(keys.request(p.request_id))  # type: ignore[misc]
    return record, await r.zscore(keys.queue(p.provider), jid), bool(await r.exists(keys.arq_job(jid)))


async def test_an_admitted_request_is_enqueued_and_charged_in_the_same_call(r: aioredis.Redis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, tenant_quotas={"alice": {"rpm": 1}}, tenant_default_rpm=1000)
    limiter = ApiLimiter(RequestQueue(r), settings)
    first = payload()
    admitted = await limiter.admit(first, max_wait_s=30, reply="reply-channel")
    assert admitted.refusal is None and admitted.headers["X-RateLimit-Provider"] == "openai"
    record, score, job = await enqueued(r, first)
    assert record[b"status"] == b"queued" and record[b"reply"] == b"reply-channel" and record[b"tenant"] == b"alice"
    assert score is not None and job
    tenant_requests = limiter.plan.tenant("alice").requests
    assert await level(r, tenant_requests) == pytest.approx(tenant_requests.capacity - 1, abs=0.01)

    # over the quota: refused, nothing of the request written, and the tenant not charged again
    second = JobPayload(request_id="r2", provider="openai", call=call(max_tokens=10), tenant="alice")
    refused = await limiter.admit(second, max_wait_s=30, reply="reply-channel")
    assert refused.refusal is not None and refused.refusal.status_code == 429
    assert await enqueued(r, second) == ({}, None, False)
    assert await r.zcard(keys.queue("openai")) == 1
    assert await level(r, tenant_requests) == pytest.approx(tenant_requests.capacity - 1, abs=0.01)


async def test_a_request_refused_for_the_backlog_is_neither_enqueued_nor_charged(
    r: aioredis.Redis, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, rate_limit_openai_rpm=60, rate_limit_burst_s=1)
    limiter = ApiLimiter(RequestQueue(r), settings)
    plan = limiter.plan
    await BucketStore(r).draw([Draw(plan.provider("openai").requests, 1, "tw")], gate="w", holding=6)  # 5 queue
    p = payload()
    refused = await limiter.admit(p, max_wait_s=2)
    assert refused.refusal is not None and refused.refusal.status_code == 429
    assert await enqueued(r, p) == ({}, None, False)
    tenant = plan.tenant("alice")
    assert await level(r, tenant.requests) == tenant.requests.capacity
    assert await level(r, tenant.tokens) == tenant.tokens.capacity
    # a job (no timeout) waits in the queue instead: enqueued
    assert (await limiter.admit(p)).refusal is None
    assert (await enqueued(r, p))[1] is not None


async def test_a_provider_queue_at_its_bound_of_waiting_jobs_refuses_new_requests_at_once(
    r: aioredis.Redis, redis_url: str
) -> None:
    """QUEUE_MAX_WAITING: unclaimed interactive jobs on the provider's queue (no worker in the room,
    so none is handed over) up to the bound; the next request gets 503 with Retry-After, is neither
    enqueued nor charged; a batch item waiting does not count, nor does another provider's queue."""
    settings = Settings(redis_url=redis_url, tenant_default_rpm=1000, queue_max_waiting=2)
    queue = RequestQueue.from_settings(r, settings)
    limiter = ApiLimiter(queue, settings)
    for n in range(2):
        assert (await limiter.admit(dataclasses.replace(payload(), request_id=f"w{n}"))).refusal is None
    await queue.enqueue(dataclasses.replace(payload(), request_id="b", kind="batch"))

    p = dataclasses.replace(payload(), request_id="over")
    refused = await limiter.admit(p, max_wait_s=30)
    assert refused.refusal is not None and refused.refusal.status_code == 503
    assert refused.refusal.headers["Retry-After"] == "1"
    assert await enqueued(r, p) == ({}, None, False)
    tenant = limiter.plan.tenant("alice")
    assert (
        tenant.requests.capacity - 2.5 < await level(r, tenant.requests) < tenant.requests.capacity - 1.5
    )  # 2 charged
    assert (await limiter.admit(dataclasses.replace(p, provider="anthropic"))).refusal is None

    await r.zadd(keys.queue("openai"), {keys.job_id("w0", 0): now_ms() + 60_000})  # claimed: its lease's end
    assert (await limiter.admit(p)).refusal is None


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("RATE_LIMIT_GLOBAL_RPM", "0"),
        ("RATE_LIMIT_OPENAI_TPM", "-5"),
        ("RATE_LIMIT_ANTHROPIC_RPM", "sixty"),
        ("RATE_LIMIT_BURST_S", "inf"),
        ("TENANT_DEFAULT_TPM", "0"),
    ],
)
def test_invalid_limits_stop_start_up_naming_the_setting(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert env.lower() in str(info.value)


def test_a_worker_with_an_invalid_limit_does_not_start() -> None:
    env = {**os.environ, "RATE_LIMIT_OPENAI_RPM": "-60", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "workers", "openai"], cwd=ROOT, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert b"rate_limit_openai_rpm" in done.stderr


def test_tenant_quotas_come_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_QUOTAS", '{"alice": {"rpm": 10, "tpm": 5000}, "bob": {"rpm": 3}}')
    monkeypatch.setenv("TENANT_DEFAULT_TPM", "777")
    plan = LimitPlan(Settings())
    assert (plan.tenant("alice").requests.per_minute, plan.tenant("alice").tokens.per_minute) == (10, 5000)
    assert (plan.tenant("bob").requests.per_minute, plan.tenant("bob").tokens.per_minute) == (3, 777)
    monkeypatch.setenv("TENANT_QUOTAS", '{"alice": {"rpm": 0}}')
    with pytest.raises(ValidationError, match=r"tenant_quotas\.alice\.rpm"):
        Settings()


def test_spec_defaults() -> None:
    plan = LimitPlan(Settings())
    assert (plan.global_.requests.per_minute, plan.global_.tokens.per_minute) == (120, 200_000)
    for provider in ("openai", "anthropic"):
        assert (plan.provider(provider).requests.per_minute, plan.provider(provider).tokens.per_minute) == (
            60,
            100_000,
        )


# -- the estimate -------------------------------------------------------------------------------------


def test_estimate_counts_characters_framing_and_the_completion_budget() -> None:
    settings = Settings(rate_limit_default_completion_tokens=700, anthropic_default_max_tokens=900)
    messages = [{"role": "system", "content": "x" * 8}, {"role": "user", "content": "y" * 9}]
    assert prompt_tokens(messages) == 3 + (3 + 2) + (3 + 3)
    assert completion_budget("openai", None, settings) == 700
    assert completion_budget("anthropic", None, settings) == 900
    assert completion_budget("anthropic", 42, settings) == 42


async def test_gate_lets_higher_priority_waiters_in_first() -> None:
    gate = AdmissionGate()
    order: list[str] = []
    release = asyncio.Event()

    async def holder_ask(holding: int) -> tuple[bool, float]:
        await release.wait()
        return True, 0.0

    def asker(name: str):  # type: ignore[no-untyped-def]
        async def ask(holding: int) -> tuple[bool, float]:
            order.append(name)
            return True, 0.0

        return ask

    head = asyncio.create_task(gate.enter(holder_ask, 2))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(gate.enter(asker("batch-1"), 2)),
        asyncio.create_task(gate.enter(asker("async"), 1)),
        asyncio.create_task(gate.enter(asker("batch-2"), 2)),
        asyncio.create_task(gate.enter(asker("sync"), 0)),
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(head, *waiting)
    assert order == ["sync", "async", "batch-1", "batch-2"]
    assert gate.holding == 0


async def test_gate_passes_on_a_turn_handed_to_a_cancelled_waiter() -> None:
    gate = AdmissionGate()
    release = asyncio.Event()
    entered: list[str] = []

    async def slow(holding: int) -> tuple[bool, float]:
        await release.wait()
        return True, 0.0

    async def quick(holding: int) -> tuple[bool, float]:
        entered.append("next")
        return True, 0.0

    head = asyncio.create_task(gate.enter(slow))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(gate.enter(quick, 0))
    survivor = asyncio.create_task(gate.enter(quick, 1))
    await asyncio.sleep(0)
    doomed.cancel()
    release.set()
    await head
    await survivor
    assert entered == ["next"]
    with pytest.raises(asyncio.CancelledError):
        await doomed


# -- calls that reach the gate together ---------------------------------------------------------------


async def evalsha_calls(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_calls_queued_behind_a_head_are_admitted_in_one_draw(r: aioredis.Redis, redis_url: str) -> None:
    settings = slow_settings(redis_url)
    guard = LimitsGuard(r, settings, gate_id="test")
    await guard.store.draw([])  # load the script: the count below is of draws only
    before = await evalsha_calls(r)
    admissions = await asyncio.gather(*(guard.admit("openai", call()) for _ in range(10)))
    assert len(admissions) == 10
    # the first asks alone; the nine that queued behind it meanwhile go in one draw
    assert await evalsha_calls(r) - before == 2
    requests = guard.plan.provider("openai").requests
    tokens = guard.plan.provider("openai").tokens
    assert await level(r, requests) == pytest.approx(requests.capacity - 10, abs=0.01)
    estimate = estimate_call(call(), "openai", settings)
    assert await level(r, tokens) == pytest.approx(tokens.capacity - 10 * estimate, abs=0.5)
    assert guard.gate.holding == 0


async def test_a_group_never_takes_more_than_a_full_bucket(r: aioredis.Redis, redis_url: str) -> None:
    # 6,000 requests a minute with a bucket of 5: a group is the head and at most four more
    settings = Settings(
        redis_url=redis_url, rate_limit_openai_rpm=6_000, rate_limit_burst_s=0.05, rate_limit_global_rpm=10**8
    )
    guard = LimitsGuard(r, settings, gate_id="test")
    head = _Call("openai", 10)
    assert await guard._admit_group(head, [_Call("openai", 10)] * 9, holding=10) == 4
    requests = guard.plan.provider("openai").requests
    assert await level(r, requests) == pytest.approx(0, abs=0.01)  # five taken, never into debt
    # the bucket is empty now: a group is refused whole and nothing is taken
    assert await guard._admit_group(head, [_Call("openai", 10)] * 3, holding=4) == -1
    assert await level(r, requests) == pytest.approx(0, abs=0.1)
    assert await guard._admit_group(head, [_Call("anthropic", 10)], holding=2) == -1  # another provider's call


async def test_a_call_admitted_with_a_group_after_its_job_was_cancelled_is_given_back() -> None:
    given_back: list[str] = []
    victim: asyncio.Task[None] | None = None

    async def admit_group(head: str, waiting: list[str], holding: int) -> int:
        assert victim is not None
        victim.cancel()  # its job is cancelled while the draw is on its way
        await asyncio.sleep(0)
        return len(waiting)

    gate = AdmissionGate(admit_group, given_back.append)
    release = asyncio.Event()

    async def first(holding: int) -> tuple[bool, float]:
        await release.wait()
        return True, 0.0

    async def never(holding: int) -> tuple[bool, float]:
        raise AssertionError("admitted with the group: it never asks")

    head = asyncio.create_task(gate.enter(first, 1, "head"))
    await asyncio.sleep(0)
    second = asyncio.create_task(gate.enter(never, 1, "second"))  # the next head: asks for the group
    victim = asyncio.create_task(gate.enter(never, 1, "victim"))
    third = asyncio.create_task(gate.enter(never, 1, "third"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(head, second, third)
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert given_back == ["victim"]
    assert gate.holding == 0
