"""Response caching: hits never reach a worker, opt-outs, TTL expiry, clearing, coalescing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from api.response_cache import digest
from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys
from shared.schemas import ChatRequest
from shared.settings import Settings
from tests.integration.conftest import Upstream, start_stack

CACHE_TTL_S = 2
URL = "/api/v1/llm/chat/completions"


@pytest.fixture(scope="module")
def cache_stack() -> Iterator[Stack]:
    s = start_stack({"openai": [{}], "anthropic": [{}]}, CACHE_TTL_S=str(CACHE_TTL_S))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def upstream(cache_stack: Stack) -> Iterator[Upstream]:
    up = Upstream(cache_stack)
    up.reset()
    yield up
    up.reset()


@pytest.fixture
def client(cache_stack: Stack) -> Iterator[httpx.Client]:
    with cache_stack.client() as c:
        yield c


def body(temperature: float | None = 0.0, **extra: Any) -> dict[str, Any]:
    """A request no other test sends, so every test starts with a cold cache."""
    return {
        "messages": [{"role": "user", "content": f"What is the capital of France? ({uuid.uuid4().hex})"}],
        "provider": "openai",
        "maxTokens": 20,
        "temperature": temperature,
        **extra,
    }


def ask(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(URL, json=request)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def test_identical_deterministic_request_is_served_from_cache(client: httpx.Client, upstream: Upstream) -> None:
    request = body()
    first = ask(client, request)
    second = ask(client, request)
    assert first["cached"] is False and first["cost"]["totalCost"] > 0
    assert second["cached"] is True
    assert second["content"] == first["content"]
    assert second["cost"] == {"promptCost": 0.0, "completionCost": 0.0, "totalCost": 0.0, "currency": "USD"}
    assert second["attempts"] == []
    assert second["id"] != first["id"]
    assert upstream.calls("openai") == 1


def test_cached_answer_serves_either_provider(client: httpx.Client, upstream: Upstream) -> None:
    request = body()
    ask(client, request)
    request["provider"] = "anthropic"
    again = ask(client, request)
    assert again["cached"] is True and again["provider"] == "openai"
    assert upstream.calls("anthropic") == 0


@pytest.mark.parametrize(
    "request_body",
    [body(temperature=0.7), body(temperature=None), body(cache=False)],
    ids=["temperature-above-zero", "temperature-unset", "opted-out"],
)
def test_not_cached(client: httpx.Client, upstream: Upstream, request_body: dict[str, Any]) -> None:
    assert ask(client, request_body)["cached"] is False
    assert ask(client, request_body)["cached"] is False
    assert upstream.calls("openai") == 2


def test_entry_expires_after_its_ttl(
    client: httpx.Client, upstream: Upstream, cache_stack: Stack, redis_of: Any
) -> None:
    request = body()
    ask(client, request)
    r: redis.Redis = redis_of(cache_stack)
    entry = keys.cache_entry(digest(ChatRequest.model_validate(request), Settings()))
    assert 0 < r.ttl(entry) <= CACHE_TTL_S
    wait_until(lambda: not r.exists(entry), CACHE_TTL_S + 5, "the cache entry to expire")
    assert ask(client, request)["cached"] is False
    assert upstream.calls("openai") == 2


def test_clear_empties_the_cache_and_is_admin_only(
    client: httpx.Client, upstream: Upstream, cache_stack: Stack
) -> None:
    request = body()
    ask(client, request)
    assert ask(client, request)["cached"] is True
    refused = client.post("/api/v1/llm/cache/clear")
    assert refused.status_code == 403
    with cache_stack.client(role="admin") as admin:
        cleared = admin.post("/api/v1/llm/cache/clear")
    assert cleared.status_code == 200 and cleared.json()["data"]["cleared"] >= 1
    assert ask(client, request)["cached"] is False
    assert upstream.calls("openai") == 2


def _leader_then_followers(client: httpx.Client, upstream: Upstream, request: dict[str, Any]) -> list[httpx.Response]:
    """Send one request, and once it is held at the provider (so it leads), three identical ones."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        leader = pool.submit(client.post, URL, json=request)
        upstream.wait_in_flight("openai")
        followers = [pool.submit(client.post, URL, json=request) for _ in range(3)]
        return [leader.result(), *(f.result() for f in followers)]


def test_identical_requests_in_flight_share_one_upstream_call(client: httpx.Client, upstream: Upstream) -> None:
    request = body()
    upstream.fault("openai", mode="hang", seconds=3, count=1)  # held, then answered normally
    answers = _leader_then_followers(client, upstream, request)
    assert [a.status_code for a in answers] == [200] * 4
    data = [a.json()["data"] for a in answers]
    assert upstream.calls("openai") == 1
    assert len({d["content"] for d in data}) == 1
    assert [d["cached"] for d in data] == [False, True, True, True]  # the followers waited on the leader
    assert len({d["id"] for d in data}) == 4


def test_waiters_get_the_leaders_error(client: httpx.Client, upstream: Upstream) -> None:
    request = body()
    upstream.fault("openai", mode="slow", latency_ms=3000, count=1)
    upstream.fault("openai", mode="status", status=400, count=1)
    answers = _leader_then_followers(client, upstream, request)
    assert [a.status_code for a in answers] == [400] * 4
    assert {a.json()["error"]["type"] for a in answers} == {"invalid_request_error"}
    assert upstream.calls("openai") == 1
    assert ask(client, request)["cached"] is False  # a failure is never cached
