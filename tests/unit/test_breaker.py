"""The breaker's scripts and the health scoring, against a real redis-server (the scripts are Lua).

Time is passed in explicitly (`now`), so cooldowns and probe timeouts are crossed without waiting.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared import keys
from shared.breaker import BreakerConfig, BreakerOpen, BreakerSnapshot, BreakerState, CircuitBreakers, counts_against
from shared.errors import ErrorType, GatewayError
from shared.health import HealthStatus, Passive, Probe, ProviderStatusView, assess, overall, read_health, record_call
from shared.settings import Settings

T0 = 1_700_000_000_000
P = "openai"
CONFIG = BreakerConfig(
    failure_threshold=3,
    error_rate=0.5,
    window_ms=10_000,
    min_requests=10,
    cooldown_ms=5_000,
    probes=2,
    probe_timeout_ms=20_000,
)


@pytest.fixture
def redis(r: Redis) -> Redis:
    return r


@pytest.fixture
def breakers(redis: Redis) -> CircuitBreakers:
    return CircuitBreakers(redis, CONFIG)


async def fail(b: CircuitBreakers, now: int, n: int = 1, gen: int = 0) -> None:
    for _ in range(n):
        await b.record(P, "fail", now, probe_gen=gen)


async def open_breaker(b: CircuitBreakers, now: int = T0) -> None:
    await fail(b, now, CONFIG.failure_threshold)
    assert (await b.snapshot(P)).state is BreakerState.OPEN


def provider_error(etype: ErrorType, **kw: object) -> GatewayError:
    return GatewayError(etype, "boom", provider=P, **kw)  # type: ignore[arg-type]


def test_only_provider_side_retryable_failures_count() -> None:
    assert counts_against(None) == "ok"
    assert counts_against(provider_error(ErrorType.SERVICE_UNAVAILABLE)) == "fail"
    assert counts_against(provider_error(ErrorType.TIMEOUT)) == "fail"
    assert counts_against(provider_error(ErrorType.INVALID_REQUEST)) == "neutral"  # bad input
    assert counts_against(provider_error(ErrorType.CONTEXT_LENGTH)) == "neutral"
    assert counts_against(provider_error(ErrorType.AUTHENTICATION)) == "neutral"
    assert counts_against(provider_error(ErrorType.RATE_LIMIT)) == "neutral"
    # refused by the gateway itself (no provider answered)
    assert counts_against(GatewayError(ErrorType.SERVICE_UNAVAILABLE, "limit")) == "neutral"
    assert counts_against(BreakerOpen(P, BreakerState.OPEN, 1.0)) == "neutral"


async def test_opens_at_the_consecutive_failure_threshold(breakers: CircuitBreakers) -> None:
    await fail(breakers, T0, CONFIG.failure_threshold - 1)
    assert (await breakers.snapshot(P)).state is BreakerState.CLOSED
    assert (await breakers.acquire(P, T0)).allowed
    await fail(breakers, T0)
    snap = await breakers.snapshot(P)
    assert snap.state is BreakerState.OPEN
    assert snap.open_until_ms == T0 + CONFIG.cooldown_ms
    permit = await breakers.acquire(P, T0 + 1)
    assert not permit.allowed and permit.state is BreakerState.OPEN
    assert permit.retry_in_ms == CONFIG.cooldown_ms - 1


async def test_a_success_resets_the_streak_and_neutral_outcomes_do_not_count(redis: Redis) -> None:
    breakers = CircuitBreakers(redis, BreakerConfig(3, 0.5, 10_000, 1000, 5_000, 1, 20_000))  # streak only
    for _ in range(5):
        await fail(breakers, T0, CONFIG.failure_threshold - 1)
        await breakers.record(P, "ok", T0)
    for _ in range(20):
        await breakers.record(P, "neutral", T0)
    snap = await breakers.snapshot(P)
    assert snap.state is BreakerState.CLOSED and snap.consecutive_failures == 0


async def test_opens_on_the_error_rate_once_the_window_has_enough_calls(redis: Redis) -> None:
    b = CircuitBreakers(redis, BreakerConfig(100, 0.5, 10_000, 10, 5_000, 1, 20_000))
    for i in range(4):  # 8 calls, half failed: below the minimum
        await b.record(P, "ok", T0 + i)
        await b.record(P, "fail", T0 + i)
    assert (await b.snapshot(P)).state is BreakerState.CLOSED
    await b.record(P, "ok", T0 + 5)
    await b.record(P, "fail", T0 + 5)  # 10 calls, 5 failed
    assert (await b.snapshot(P)).state is BreakerState.OPEN


async def test_old_calls_leave_the_window(redis: Redis) -> None:
    b = CircuitBreakers(redis, BreakerConfig(100, 0.6, 10_000, 10, 5_000, 1, 20_000))
    for _ in range(9):
        await b.record(P, "fail", T0)
        await b.record(P, "ok", T0)  # keep the streak short
    later = T0 + 11_000  # the 18 calls above are out of the window now
    await b.record(P, "ok", later)
    for _ in range(2):
        await b.record(P, "fail", later)
    assert (await b.snapshot(P)).state is BreakerState.CLOSED  # 2 of 3: too few calls to judge
    for _ in range(5):
        await b.record(P, "ok", later)
    await b.record(P, "fail", later)
    await b.record(P, "fail", later)
    assert (await b.snapshot(P)).state is BreakerState.CLOSED  # 2 of 10, not 11 of 28


async def test_half_open_grants_exactly_the_configured_probes(breakers: CircuitBreakers) -> None:
    await open_breaker(breakers)
    after = T0 + CONFIG.cooldown_ms
    permits = await asyncio.gather(*(breakers.acquire(P, after) for _ in range(25)))
    probes = [p for p in permits if p.allowed]
    assert len(probes) == CONFIG.probes
    assert all(p.state is BreakerState.HALF_OPEN and p.probe_gen > 0 for p in probes)
    refused = [p for p in permits if not p.allowed]
    assert all(p.state is BreakerState.HALF_OPEN and p.retry_in_ms > 0 for p in refused)


async def test_a_probe_success_closes_and_a_probe_failure_reopens(breakers: CircuitBreakers) -> None:
    await open_breaker(breakers)
    after = T0 + CONFIG.cooldown_ms
    probe = await breakers.acquire(P, after)
    await fail(breakers, after + 10, gen=probe.probe_gen)
    snap = await breakers.snapshot(P)
    assert snap.state is BreakerState.OPEN and snap.open_until_ms == after + 10 + CONFIG.cooldown_ms

    again = after + 10 + CONFIG.cooldown_ms
    probe = await breakers.acquire(P, again)
    assert probe.allowed and probe.state is BreakerState.HALF_OPEN
    await breakers.record(P, "ok", again + 5, probe_gen=probe.probe_gen)
    snap = await breakers.snapshot(P)
    assert snap.state is BreakerState.CLOSED and snap.consecutive_failures == 0
    assert (await breakers.acquire(P, again + 6)).state is BreakerState.CLOSED


async def test_results_of_calls_that_were_not_probes_do_not_decide_half_open(breakers: CircuitBreakers) -> None:
    await open_breaker(breakers)
    after = T0 + CONFIG.cooldown_ms
    stale = await breakers.acquire(P, after)  # generation 1
    await fail(breakers, after, gen=stale.probe_gen)  # reopens
    current = await breakers.acquire(P, after + CONFIG.cooldown_ms)  # generation 2
    assert current.probe_gen != stale.probe_gen
    await breakers.record(P, "ok", after + CONFIG.cooldown_ms, probe_gen=stale.probe_gen)  # late, old
    await breakers.record(P, "ok", after + CONFIG.cooldown_ms)  # admitted while closed, long ago
    assert (await breakers.snapshot(P)).state is BreakerState.HALF_OPEN


async def test_a_neutral_probe_gives_its_slot_back(breakers: CircuitBreakers) -> None:
    await open_breaker(breakers)
    after = T0 + CONFIG.cooldown_ms
    first, second = [await breakers.acquire(P, after) for _ in range(2)]
    assert not (await breakers.acquire(P, after)).allowed
    await breakers.record(P, "neutral", after, probe_gen=first.probe_gen)
    assert (await breakers.acquire(P, after)).allowed
    assert second.allowed


async def test_a_probe_that_never_reports_reopens_the_breaker(breakers: CircuitBreakers) -> None:
    await open_breaker(breakers)
    after = T0 + CONFIG.cooldown_ms
    for _ in range(CONFIG.probes):
        assert (await breakers.acquire(P, after)).allowed  # their workers die
    lapsed = after + CONFIG.probe_timeout_ms
    permit = await breakers.acquire(P, lapsed)
    assert not permit.allowed and permit.state is BreakerState.OPEN
    assert (await breakers.acquire(P, lapsed + CONFIG.cooldown_ms)).allowed


async def test_moves_are_published_and_the_view_follows_them(redis: Redis, breakers: CircuitBreakers) -> None:
    settings = Settings(_env_file=None)
    view = ProviderStatusView(redis, settings, ("openai", "anthropic"))
    view.start()
    try:
        await asyncio.wait_for(view.ready.wait(), 5)
        assert view.unavailable(T0) == frozenset()
        await open_breaker(breakers, T0)
        await _until(lambda: view.breaker(P).state is BreakerState.OPEN)
        assert view.unavailable(T0 + 1) == {P}
        after = T0 + CONFIG.cooldown_ms
        assert view.unavailable(after) == frozenset()  # cooled down: a request may become the probe
        assert (await breakers.acquire(P, after)).probe_gen > 0
        await _until(lambda: view.breaker(P).state is BreakerState.HALF_OPEN)
        assert view.unavailable(after + 1) == {P}  # the probe is under way: keep routing around it
        assert view.unavailable(after + CONFIG.probe_timeout_ms) == frozenset()  # the probe is lost
        await breakers.reset(P)
        await _until(lambda: view.breaker(P).state is BreakerState.CLOSED)
    finally:
        await view.stop()


async def _until(check: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def test_breaker_open_fails_fast_and_is_retryable() -> None:
    err = BreakerOpen(P, BreakerState.OPEN, 2.5)
    assert err.type is ErrorType.SERVICE_UNAVAILABLE and err.retryable and err.fail_fast
    assert err.status == 503 and err.retry_after == 2.5 and err.provider == P


# --- health scoring -------------------------------------------------------------------------------


SETTINGS = Settings(_env_file=None, health_min_requests=5)
CLOSED = BreakerSnapshot()


def judge(passive: Passive, breaker: BreakerSnapshot = CLOSED, probe: Probe | None = None) -> HealthStatus:
    return assess(P, passive, breaker, probe, SETTINGS, T0).status


def test_health_status_follows_the_figures() -> None:
    ok_probe = Probe(ok=True, latency_ms=40, at_ms=T0)
    assert judge(Passive(100, 2, 100 * 250), probe=ok_probe) is HealthStatus.HEALTHY
    assert judge(Passive(100, 11, 100 * 250)) is HealthStatus.DEGRADED  # > 10% errors
    assert judge(Passive(100, 0, 100 * 5_100)) is HealthStatus.DEGRADED  # > 5 s mean latency
    assert judge(Passive(100, 50, 100 * 250)) is HealthStatus.UNHEALTHY  # >= 50% errors
    assert judge(Passive(4, 4, 400)) is HealthStatus.HEALTHY  # too few calls to judge
    assert judge(Passive(), BreakerSnapshot(BreakerState.OPEN, 5, T0 + 1000)) is HealthStatus.UNHEALTHY
    failing = Probe(ok=False, latency_ms=None, at_ms=T0, error="service_unavailable")
    assert judge(Passive(), probe=failing) is HealthStatus.UNHEALTHY
    stale = Probe(ok=False, latency_ms=None, at_ms=T0 - 10 * 60_000)
    assert judge(Passive(), probe=stale) is HealthStatus.HEALTHY  # a stopped monitor says nothing


def test_score_and_overall() -> None:
    fast = assess(P, Passive(100, 0, 100 * 100), CLOSED, None, SETTINGS, T0)
    slow = assess(P, Passive(100, 0, 100 * 5_000), CLOSED, None, SETTINGS, T0)
    erring = assess(P, Passive(100, 20, 100 * 100), CLOSED, None, SETTINGS, T0)
    opened = assess(P, Passive(), BreakerSnapshot(BreakerState.OPEN, 5, T0 + 1), None, SETTINGS, T0)
    assert fast.score > erring.score > 0 and fast.score > slow.score > 0 and opened.score == 0
    assert slow.score == 50  # half the points are gone at the degraded-latency threshold
    assert overall([fast, fast]) is HealthStatus.HEALTHY
    assert overall([fast, opened]) is HealthStatus.DEGRADED
    assert overall([opened, opened]) is HealthStatus.UNHEALTHY
    api = fast.to_api()
    assert {"status", "latency", "successRate", "errorRate", "score", "breaker"} <= set(api)
    assert api["latency"] == 100 and api["successRate"] == 1.0 and api["breaker"]["state"] == "closed"


async def test_passive_figures_are_bucketed_and_read_back(redis: Redis) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(10):
            record_call(pipe, P, failed=i < 3, latency_ms=200, now_ms=T0 + i, settings=SETTINGS)
        await pipe.execute()
    health = (await read_health(redis, [P, "anthropic"], SETTINGS, T0 + 10))[P]
    assert health.passive == Passive(10, 3, 2000)
    assert health.status is HealthStatus.DEGRADED and health.error_rate == 0.3
    assert await redis.pttl(keys.health_bucket(P, T0 // 10_000)) > 0  # buckets expire
    later = await read_health(redis, [P], SETTINGS, T0 + int(SETTINGS.health_window_s * 1000) + 20_000)
    assert later[P].passive.requests == 0
