"""A tenant refused for its requests/min quota is refused again without Redis until its Retry-After."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from api import rate_limits
from api.rate_limits import ApiLimiter
from shared.queue import RequestQueue
from shared.schemas import JobPayload, ProviderCall
from shared.settings import Settings


def payload(tenant: str) -> JobPayload:
    call = ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
    return JobPayload(request_id="0" * 32, provider="openai", call=call, tenant=tenant)


async def test_a_refused_tenant_is_refused_locally_until_its_retry_after(
    r: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(redis_url=redis_url, tenant_quotas={"bob": {"rpm": 1, "tpm": 1_000_000}})
    limiter = ApiLimiter(RequestQueue(r), settings)
    assert (await limiter.admit(payload("bob"))).refusal is None
    first = await limiter.admit(payload("bob"))
    assert first.refusal is not None and first.refusal.status_code == 429

    asked: list[int] = []
    real = limiter.queue.enqueue_if_admitted

    async def counting(*args: object, **kwargs: object) -> object:
        asked.append(1)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(limiter.queue, "enqueue_if_admitted", counting)
    again = await limiter.admit(payload("bob"))
    assert again.refusal is not None and again.refusal.status_code == 429
    assert asked == []  # no round trip
    assert (await limiter.admit(payload("alice"))).refusal is None  # other tenants are asked as ever
    assert asked == [1]

    # once the moment it named has come, Redis is asked again
    later = rate_limits._clock() + 61
    monkeypatch.setattr(rate_limits, "_clock", lambda: later)
    await limiter.admit(payload("bob"))
    assert asked == [1, 1]
