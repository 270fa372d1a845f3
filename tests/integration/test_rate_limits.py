"""Rate limits end to end: three OpenAI worker processes share tight buckets through Redis.

OpenAI is limited to 600 requests/min (10 a second) with a bucket of 5 (RATE_LIMIT_BURST_S=0.5);
Anthropic and the global limits are left unshaped. What the simulator receives is read from its
arrival timestamps; nothing here asserts how fast anything ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from devstack.procs import start_redis, wait_until
from devstack.stack import Stack
from shared import keys
from shared.limits import tenant_scope

pytestmark = pytest.mark.timeout(240)

RPM = 600
RATE = RPM / 60  # per second
BURST_S = 0.5
CAPACITY = RATE * BURST_S  # 5 requests
OPENAI_WORKERS = 3
PROVIDER_REQ = keys.rate_bucket("provider:openai", "req")


@pytest.fixture(scope="module")
def limited() -> Iterator[Stack]:
    s = Stack()
    try:
        _, redis_url = start_redis(s.group)
        s.start_simulator(latency_ms=5)
        s.configure(
            redis_url,
            RETRY_BASE_DELAY_S="0.01",
            RETRY_MAX_DELAY_S="0.5",
            WORKER_LEASE_S="1.5",
            WORKER_POLL_FALLBACK_S="0.5",
            RATE_LIMIT_OPENAI_RPM=str(RPM),
            RATE_LIMIT_BURST_S=str(BURST_S),
            RATE_LIMIT_DEFAULT_COMPLETION_TOKENS="8",
            TENANT_QUOTAS='{"alice": {"rpm": 3}, "recon-refund": {"tpm": 1}, "recon-charge": {"tpm": 1}}',
        )
        for _ in range(OPENAI_WORKERS):
            # few slots each, so the backlog is spread over the three processes, not held by one
            s.start_worker("openai", {"WORKER_MAX_JOBS": "4"})
        s.start_worker("anthropic")
        s.wait_workers({"openai": OPENAI_WORKERS, "anthropic": 1})
        s.start_api()
        yield s
    except BaseException:
        for proc in s.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")
        raise
    finally:
        s.stop()


@pytest.fixture(scope="module")
def rdb(limited: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(limited.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def upstream(limited: Stack) -> Iterator[Stack]:
    limited.sim("POST", "/_control/reset").raise_for_status()
    yield limited
    limited.sim("POST", "/_control/reset").raise_for_status()


def chat(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


def arrivals(stack: Stack, provider: str) -> list[float]:
    return sorted(stack.sim("GET", "/_control/stats").json()[provider]["arrivals"])


def completions(stack: Stack, provider: str) -> int:
    stats = stack.sim("GET", "/_control/stats", params={"arrivals": "0"}).json()[provider]
    return int(sum(n for path, n in stats["by_path"].items() if path.endswith(("/chat/completions", "/messages"))))


def most_in_any_window(times: list[float], window: float) -> int:
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def submit_backlog(client: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        resp = client.post("/api/v1/llm/jobs", json=chat(f"backlog {i}", provider="openai", maxTokens=16))
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["data"]["id"])
    return ids


def wait_done(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    views = []
    for jid in ids:
        resp = client.get(f"/api/v1/llm/jobs/{jid}", params={"wait": 60})
        views.append(resp.json()["data"])
    return views


def bucket_level(rdb: redis.Redis, key: str, capacity: float) -> float:
    raw = rdb.hget(key, "v")
    return capacity if raw is None else float(str(raw))  # a missing bucket is full


def waiting_in_gates(rdb: redis.Redis) -> int:
    fields: dict[str, str] = rdb.hgetall(PROVIDER_REQ)  # type: ignore[assignment]
    return sum(int(v.split(":")[0]) for k, v in fields.items() if k.startswith("w:"))


def test_workers_together_keep_to_the_limit_and_use_it(limited: Stack, upstream: Stack, rdb: redis.Redis) -> None:
    n = 60
    with limited.client(sub="bulk") as client:
        ids = submit_backlog(client, n)
        views = wait_done(client, ids)
    assert [v["status"] for v in views] == ["succeeded"] * n
    # a job that waited for capacity burned no retry and was never dropped
    assert all(len(v["result"]["attempts"]) == 1 for v in views)
    served_by = {rdb.hget(keys.request(jid), "worker") for jid in ids}
    assert len(served_by) >= 2, served_by

    times = arrivals(limited, "openai")
    assert len(times) == n
    for window in (0.2, 0.5, 1.0, 2.0, 4.0):
        # the bucket's capacity plus its refill over the window; one more for delivery jitter between
        # the moment a worker took its token and the moment the simulator saw the call
        bound = CAPACITY + RATE * window + 1
        assert most_in_any_window(times, window) <= bound, (window, most_in_any_window(times, window))
    # under a backlog the limit is used: past the first bucketful, calls come at >= 90% of the rate
    steady = int(CAPACITY)
    rate = (len(times) - 1 - steady) / (times[-1] - times[steady])
    assert rate >= 0.9 * RATE, rate


def test_a_sync_request_that_would_wait_past_its_timeout_gets_429(
    limited: Stack, upstream: Stack, rdb: redis.Redis
) -> None:
    with limited.client(sub="bulk") as client:
        ids = submit_backlog(client, 40)
        wait_until(lambda: waiting_in_gates(rdb) >= 6, 20, "calls waiting in the workers' gates")
        before = completions(limited, "openai")
        impatient = client.post("/api/v1/llm/chat/completions", json=chat(provider="openai", timeout=0.3))
        assert impatient.status_code == 429, impatient.text
        error = impatient.json()["error"]
        assert error["type"] == "rate_limit_error" and error["retryable"] is True
        assert "openai" in error["message"]
        assert int(impatient.headers["Retry-After"]) >= 1
        assert impatient.headers["X-RateLimit-Provider"] == "openai"
        # a patient request waits its turn in the queue and is served
        patient = client.post("/api/v1/llm/chat/completions", json=chat(provider="openai", timeout=60))
        assert patient.status_code == 200, patient.text
        views = wait_done(client, ids)
    assert all(v["status"] == "succeeded" for v in views)
    # the refused request never reached the provider: the backlog, the patient one, nothing else
    assert completions(limited, "openai") <= before + len(ids) + 1


def test_a_tenant_over_its_quota_gets_429_and_others_are_unaffected(limited: Stack, upstream: Stack) -> None:
    statuses: dict[str, list[int]] = {"alice": [], "bob": []}
    retry_after: list[int] = []
    with limited.client(sub="alice") as alice, limited.client(sub="bob") as bob:
        for _ in range(6):
            for name, client in (("alice", alice), ("bob", bob)):
                resp = client.post("/api/v1/llm/chat/completions", json=chat(provider="anthropic"))
                statuses[name].append(resp.status_code)
                if resp.status_code == 429:
                    assert resp.json()["error"]["type"] == "rate_limit_error"
                    assert "alice" in resp.json()["error"]["message"]
                    retry_after.append(int(resp.headers["Retry-After"]))
    assert statuses["alice"] == [200] * 3 + [429] * 3  # a bucket of 3, refilled one per 20 s
    assert statuses["bob"] == [200] * 6
    assert all(1 <= r <= 20 for r in retry_after), retry_after
    # refused requests were not enqueued
    assert completions(limited, "anthropic") == 3 + 6


def test_rate_limit_headers_on_completions_and_jobs(limited: Stack, upstream: Stack) -> None:
    with limited.client(sub="headers") as client:
        before_ms = time.time() * 1000
        sync = client.post("/api/v1/llm/chat/completions", json=chat(provider="openai"))
        job = client.post("/api/v1/llm/jobs", json=chat(provider="openai"))
        other = client.post("/api/v1/llm/chat/completions", json=chat(provider="anthropic"))
        client.get(f"/api/v1/llm/jobs/{job.json()['data']['id']}", params={"wait": 30})
    for resp in (sync, job):
        assert resp.status_code in (200, 202), resp.text
        h = resp.headers
        assert h["X-RateLimit-Limit"] == str(RPM)
        assert h["X-RateLimit-Provider"] == "openai"
        assert 0 <= int(h["X-RateLimit-Remaining"]) < CAPACITY
        # epoch ms, when the bucket is full again: at most one bucketful of refill away
        assert before_ms - 1_000 <= int(h["X-RateLimit-Reset"]) <= time.time() * 1000 + BURST_S * 1000 + 1_000
    assert other.headers["X-RateLimit-Provider"] == "anthropic"
    assert int(other.headers["X-RateLimit-Remaining"]) > 1000


@pytest.mark.parametrize(("tenant", "max_tokens"), [("recon-refund", 400), ("recon-charge", None)])
def test_tenant_tokens_are_reconciled_with_real_usage(
    limited: Stack, upstream: Stack, rdb: redis.Redis, tenant: str, max_tokens: int | None
) -> None:
    """The tenant's bucket holds 1 token and refills one a minute. The API reserves the estimate
    (maxTokens 400: far above the real use, refunded; none: 8 tokens, below the ~70 used, charged);
    once the request ends the bucket shows exactly the real usage taken."""
    body = chat("reconcile me", provider="openai", **({"maxTokens": max_tokens} if max_tokens else {}))
    with limited.client(sub=tenant) as client:
        resp = client.post("/api/v1/llm/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        used = resp.json()["data"]["usage"]["totalTokens"]
        key = keys.rate_bucket(tenant_scope(tenant), "tok")
        wait_until(lambda: abs(bucket_level(rdb, key, 1.0) - (1 - used)) < 0.5, 10, "tenant tokens reconciled")
        # in debt now: the tenant's next request is refused on tokens, not requests
        again = client.post("/api/v1/llm/chat/completions", json=body)
    assert again.status_code == 429
    assert "tokens/min" in again.json()["error"]["message"]
