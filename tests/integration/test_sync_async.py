"""The two ways in: a synchronous completion and an asynchronous job, on both providers."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys

COMPLETIONS = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"
SPEC_BODY: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello, how are you?"},
    ],
    "maxTokens": 150,
    "temperature": 0.7,
}
# SPEC.md's prices per 1K tokens (input, output)
PRICES = {
    "gpt-4": (0.03, 0.06),
    "claude-3-opus-20240229": (0.015, 0.075),
    "claude-3-sonnet-20240229": (0.003, 0.015),
}
ROUTES = [
    pytest.param({"model": "gpt-4", "provider": "openai"}, "openai", "gpt-4", id="openai-explicit"),
    pytest.param({"model": "gpt-4"}, "openai", "gpt-4", id="openai-by-model"),
    pytest.param({"provider": "anthropic"}, "anthropic", "claude-3-sonnet-20240229", id="anthropic-default-model"),
    pytest.param({"model": "claude-3-opus-20240229"}, "anthropic", "claude-3-opus-20240229", id="anthropic-by-model"),
]


def assert_completion(data: dict[str, Any], provider: str, model: str, stack: Stack) -> None:
    """A successful completion as a user sees it: content, normalised finish reason, usage, SPEC cost."""
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["provider"] == provider
    assert data["model"] == model
    assert data["content"].startswith(f"Simulated {provider} reply to: Hello, how are you?")
    assert data["finishReason"] == "stop"
    usage = data["usage"]
    assert usage["promptTokens"] > 0 and usage["completionTokens"] == 64
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    per_1k_in, per_1k_out = PRICES[model]
    cost = data["cost"]
    assert cost["currency"] == "USD"
    assert cost["promptCost"] == pytest.approx(usage["promptTokens"] * per_1k_in / 1000)
    assert cost["completionCost"] == pytest.approx(usage["completionTokens"] * per_1k_out / 1000)
    assert cost["totalCost"] == pytest.approx(cost["promptCost"] + cost["completionCost"])
    assert [(a["provider"], a["model"], a["error"]) for a in data["attempts"]] == [(provider, model, None)]


def assert_no_secrets(resp: httpx.Response, stack: Stack) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert stack.env[name] not in resp.text


@pytest.mark.parametrize(("route", "provider", "model"), ROUTES)
def test_sync_completion(
    api: httpx.Client, upstream: Any, stack: Stack, route: dict[str, Any], provider: str, model: str
) -> None:
    resp = api.post(COMPLETIONS, json={**SPEC_BODY, **route})

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    assert_completion(body["data"], provider, model, stack)
    assert_no_secrets(resp, stack)
    # exactly one upstream call, to the chosen provider, carrying the request id
    assert len(upstream.requests(provider, body["data"]["id"])) == 1
    assert upstream.requests(other(provider)) == []


def other(provider: str) -> str:
    return "anthropic" if provider == "openai" else "openai"


def user_chat_gpt4() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello"}], "model": "gpt-4"}


@pytest.mark.parametrize(("route", "provider", "model"), ROUTES[::2])
def test_async_job(
    api: httpx.Client, upstream: Any, stack: Stack, route: dict[str, Any], provider: str, model: str
) -> None:
    submitted = api.post(JOBS, json={**SPEC_BODY, **route})

    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"])
    assert job["status"] == "queued"
    assert (job["provider"], job["model"]) == (provider, model)
    assert job["statusUrl"] == f"{JOBS}/{job['id']}"
    assert submitted.headers["location"] == job["statusUrl"]

    done = api.get(job["statusUrl"], params={"wait": 20})
    assert done.status_code == 200, done.text
    view = done.json()["data"]
    assert view["status"] == "succeeded"
    assert view["error"] is None
    assert view["createdAt"] <= view["startedAt"] <= view["finishedAt"]
    assert view["result"]["id"] == job["id"]
    assert_completion(view["result"], provider, model, stack)
    assert_no_secrets(done, stack)
    assert len(upstream.requests(provider, job["id"])) == 1


def test_unknown_job_is_404(api: httpx.Client) -> None:
    for resp in (api.get(f"{JOBS}/{'0' * 32}"), api.get(f"{JOBS}/{'0' * 32}", params={"wait": 1})):
        assert resp.status_code == 404
        assert resp.json()["error"]["type"] == "not_found_error"


def test_long_poll_returns_when_the_job_ends(api: httpx.Client, upstream: Any, stack: Stack, redis_of: Any) -> None:
    upstream.fault("openai", mode="hang", count=1)
    job = api.post(JOBS, json=user_chat_gpt4()).json()["data"]
    upstream.wait_in_flight("openai")

    # while the provider holds the call, a short long-poll gives up and shows the job running
    running = api.get(job["statusUrl"], params={"wait": 1}).json()["data"]
    assert running["status"] == "running"
    assert running["startedAt"] is not None and running["result"] is None

    # a long-poll far longer than the client would wait comes back as soon as the job ends
    with stack.client(timeout=30) as poller, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(poller.get, job["statusUrl"], params={"wait": 300})
        r = redis_of(stack)
        wait_until(lambda: r.scard(keys.watchers(job["id"])) > 0, 10, "long-poll registered")
        upstream.release()
        answer = pending.result()
    assert answer.status_code == 200
    view = answer.json()["data"]
    assert view["status"] == "succeeded"
    assert view["result"]["content"].startswith("Simulated openai reply to:")


def test_result_is_kept_for_result_ttl(tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any) -> None:
    ttl_s = int(tuned_stack.env["RESULT_TTL_S"])
    answer = tuned_api.post(COMPLETIONS, json=user_chat_gpt4())
    assert answer.status_code == 200, answer.text
    rid = answer.json()["data"]["id"]

    ttl = redis_of(tuned_stack).ttl(keys.request(rid))
    assert ttl_s - 60 < ttl <= ttl_s
    # the answer of a synchronous request stays fetchable as a job
    kept = tuned_api.get(f"{JOBS}/{rid}").json()["data"]
    assert kept["status"] == "succeeded"
    assert kept["result"] == answer.json()["data"]
