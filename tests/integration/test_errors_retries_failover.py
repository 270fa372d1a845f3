"""Provider failures as a caller sees them: typed errors, retries, failover to the other provider.

Faults are injected at the simulator, which answers with each provider's real error bodies; the
gateway's calls are counted there too. These tests run on stacks of their own (tuned, slow) whose
breakers, health and limits never trip: one test's failures cannot change how the next is served,
and the faults injected here never open the session stack's breakers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys

COMPLETIONS = "/api/v1/llm/chat/completions"
GPT4 = {"messages": [{"role": "user", "content": "Hello"}], "model": "gpt-4"}
OPUS = {"messages": [{"role": "user", "content": "Hello"}], "model": "claude-3-opus-20240229"}


def failed(resp: httpx.Response, status: int, etype: str, retryable: bool, stack: Stack) -> dict[str, Any]:
    """Assert the SPEC error shape and return the error object."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    err: dict[str, Any] = body["error"]
    assert err["type"] == etype
    assert err["retryable"] is retryable
    assert err["message"]
    assert "param" in err
    assert len(err["jobId"]) == 32
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert stack.env[name] not in resp.text
    return err


def tried(attempts: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(provider, error type or None) of each provider call."""
    return [(a["provider"], a["error"]["type"] if a["error"] else None) for a in attempts]


# -- each error type, mapped from real-shaped provider errors ------------------------------------------

Setup = Callable[[Any, Stack], object]


def both(status: int, **rule: Any) -> Setup:
    def setup(upstream: Any, _: Stack) -> None:
        upstream.fault("openai", status=status, **rule)
        upstream.fault("anthropic", status=status, **rule)

    return setup


def one(provider: str, status: int, **rule: Any) -> Setup:
    return lambda upstream, _: upstream.fault(provider, status=status, **rule)


def revoke_key(provider: str) -> Setup:
    env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}[provider]
    return lambda upstream, stack: stack.sim(
        "POST", "/_control/keys", json={"provider": provider, "revoke": [stack.env[env]]}
    ).raise_for_status()


def context_limit(model: str) -> Setup:
    return lambda upstream, _: upstream.config(context_limits={model: 1})


def strict_models(upstream: Any, _: Stack) -> None:
    upstream.config(strict_models=True)


RETRIED = ["openai"] * 3 + ["anthropic"] * 3
ERROR_CASES = [
    # retryable: each provider is retried, then the request fails over, then the last error is told
    pytest.param(both(429), GPT4, 429, "rate_limit_error", True, ["openai", "anthropic"], id="rate-limit"),
    pytest.param(
        lambda u, s: (u.fault("openai", status=503), u.fault("anthropic", status=529)),
        GPT4,
        503,
        "service_unavailable",
        True,
        RETRIED,
        id="unavailable-503-then-overloaded-529",
    ),
    pytest.param(both(500), OPUS, 503, "service_unavailable", True, RETRIED[::-1], id="unavailable-500"),
    pytest.param(both(408), GPT4, 504, "timeout_error", True, RETRIED, id="timeout-408"),
    # not retryable: one call, no failover
    pytest.param(revoke_key("openai"), GPT4, 401, "authentication_error", False, ["openai"], id="openai-bad-key"),
    pytest.param(
        revoke_key("anthropic"), OPUS, 401, "authentication_error", False, ["anthropic"], id="anthropic-bad-key"
    ),
    pytest.param(
        context_limit("gpt-4"), GPT4, 400, "context_length_error", False, ["openai"], id="openai-context-length"
    ),
    pytest.param(
        context_limit("claude-3-opus-20240229"),
        OPUS,
        400,
        "context_length_error",
        False,
        ["anthropic"],
        id="anthropic-context-length",
    ),
    pytest.param(
        strict_models,
        {**GPT4, "model": "gpt-4-nonexistent"},
        400,
        "invalid_request_error",
        False,
        ["openai"],
        id="openai-unknown-model",
    ),
    pytest.param(one("anthropic", 400), OPUS, 400, "invalid_request_error", False, ["anthropic"], id="anthropic-400"),
    pytest.param(one("openai", 403), GPT4, 403, "permission_error", False, ["openai"], id="openai-403"),
]


@pytest.mark.parametrize(("setup", "body", "status", "etype", "retryable", "calls"), ERROR_CASES)
def test_error_types(
    tuned_api: httpx.Client,
    tuned: Any,
    tuned_stack: Stack,
    setup: Setup,
    body: dict[str, Any],
    status: int,
    etype: str,
    retryable: bool,
    calls: list[str],
) -> None:
    setup(tuned, tuned_stack)
    resp = tuned_api.post(COMPLETIONS, json=body)

    err = failed(resp, status, etype, retryable, tuned_stack)
    assert [a["provider"] for a in err["attempts"]] == calls
    for attempt in err["attempts"]:
        assert attempt["error"]["retryable"] is retryable
    assert tuned.calls("openai") == calls.count("openai")
    assert tuned.calls("anthropic") == calls.count("anthropic")
    if etype == "rate_limit_error":
        assert int(resp.headers["retry-after"]) >= 1  # the provider's hint is passed on


def test_openai_insufficient_quota_is_final(tuned_api: httpx.Client, tuned: Any, tuned_stack: Stack) -> None:
    tuned.fault("openai", status=429, code="insufficient_quota")
    resp = tuned_api.post(COMPLETIONS, json=GPT4)

    err = failed(resp, 429, "rate_limit_error", False, tuned_stack)
    assert "quota" in err["message"]
    assert tried(err["attempts"]) == [("openai", "rate_limit_error")]
    assert tuned.calls("openai") == 1
    assert tuned.calls("anthropic") == 0  # out of quota is not a reason to spend elsewhere


# -- retries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "body", "status"), [("openai", GPT4, 500), ("anthropic", OPUS, 529)])
def test_retry_then_success(
    tuned_api: httpx.Client, tuned: Any, provider: str, body: dict[str, Any], status: int
) -> None:
    tuned.fault(provider, status=status, count=2)
    resp = tuned_api.post(COMPLETIONS, json=body)

    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["provider"] == provider
    assert tried(data["attempts"]) == [
        (provider, "service_unavailable"),
        (provider, "service_unavailable"),
        (provider, None),
    ]
    assert tuned.calls(provider) == 3
    assert len(tuned.requests(provider, data["id"])) == 3
    assert tuned.calls("anthropic" if provider == "openai" else "openai") == 0


def test_retry_waits_for_the_providers_retry_after(tuned_api: httpx.Client, tuned: Any) -> None:
    tuned.fault("openai", status=429, retry_after=0.3, count=1)
    resp = tuned_api.post(COMPLETIONS, json=GPT4)

    assert resp.status_code == 200, resp.text
    assert tried(resp.json()["data"]["attempts"]) == [("openai", "rate_limit_error"), ("openai", None)]
    first, second = tuned.requests("openai")
    assert second["time"] - first["time"] >= 0.3


# -- failover ----------------------------------------------------------------------------------------

FAILOVERS = [
    pytest.param("openai", 503, GPT4, "anthropic", "claude-3-opus-20240229", id="openai-to-anthropic"),
    pytest.param("anthropic", 529, OPUS, "openai", "gpt-4", id="anthropic-overloaded-to-openai"),
]


@pytest.mark.parametrize(("down", "status", "body", "target", "mapped"), FAILOVERS)
def test_failover(
    tuned_api: httpx.Client,
    tuned: Any,
    down: str,
    status: int,
    body: dict[str, Any],
    target: str,
    mapped: str,
) -> None:
    tuned.fault(down, status=status)
    resp = tuned_api.post(COMPLETIONS, json=body)

    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert (data["provider"], data["model"]) == (target, mapped)
    assert data["content"].startswith(f"Simulated {target} reply to: Hello")
    assert tried(data["attempts"]) == [(down, "service_unavailable")] * 3 + [(target, None)]
    assert [a["model"] for a in data["attempts"]] == [body["model"]] * 3 + [mapped]
    assert tuned.calls(down) == 3
    assert sent_model(tuned, target, data["id"]) == mapped


def sent_model(upstream: Any, provider: str, request_id: str) -> str:
    (call,) = upstream.requests(provider, request_id)
    return str(call["json"]["model"])


def test_failover_of_an_async_job(tuned_api: httpx.Client, tuned: Any) -> None:
    tuned.fault("openai", status=502)
    job = tuned_api.post("/api/v1/llm/jobs", json=GPT4).json()["data"]
    assert job["provider"] == "openai"

    view = tuned_api.get(job["statusUrl"], params={"wait": 20}).json()["data"]
    assert view["status"] == "succeeded"
    assert (view["provider"], view["model"]) == ("anthropic", "claude-3-opus-20240229")
    assert view["result"]["provider"] == "anthropic"


NON_RETRYABLE = [
    pytest.param("openai", {"status": 400}, GPT4, "invalid_request_error", id="openai-400"),
    pytest.param("openai", {"status": 401}, GPT4, "authentication_error", id="openai-401"),
    pytest.param("openai", {"status": 404}, GPT4, "invalid_request_error", id="openai-404"),
    pytest.param("openai", {"status": 429, "code": "insufficient_quota"}, GPT4, "rate_limit_error", id="openai-quota"),
    pytest.param("anthropic", {"status": 401}, OPUS, "authentication_error", id="anthropic-401"),
    pytest.param("anthropic", {"status": 403}, OPUS, "permission_error", id="anthropic-403"),
    pytest.param("anthropic", {"status": 413}, OPUS, "invalid_request_error", id="anthropic-413"),
]


@pytest.mark.parametrize(("provider", "rule", "body", "etype"), NON_RETRYABLE)
def test_non_retryable_errors_never_fail_over(
    tuned_api: httpx.Client,
    tuned: Any,
    tuned_stack: Stack,
    provider: str,
    rule: dict[str, Any],
    body: dict[str, Any],
    etype: str,
) -> None:
    tuned.fault(provider, **rule)
    resp = tuned_api.post(COMPLETIONS, json=body)

    err = failed(resp, resp.status_code, etype, False, tuned_stack)
    assert resp.status_code in (400, 401, 403, 429)
    assert tried(err["attempts"]) == [(provider, etype)]
    assert tuned.calls(provider) == 1
    assert tuned.calls("anthropic" if provider == "openai" else "openai") == 0


# -- real time-outs, and failover switched off (the slow stack) -----------------------------------


def test_read_timeout_is_retried(slow: Any, slow_api: httpx.Client) -> None:
    slow.fault("openai", mode="hang", count=1)
    resp = slow_api.post(COMPLETIONS, json=GPT4)

    assert resp.status_code == 200, resp.text
    assert tried(resp.json()["data"]["attempts"]) == [("openai", "timeout_error"), ("openai", None)]


def test_read_timeouts_end_in_timeout_error(slow: Any, slow_api: httpx.Client, slow_stack: Stack) -> None:
    slow.fault("openai", mode="hang")
    resp = slow_api.post(COMPLETIONS, json=GPT4)

    err = failed(resp, 504, "timeout_error", True, slow_stack)
    assert tried(err["attempts"]) == [("openai", "timeout_error")] * 2
    assert slow.calls("anthropic") == 0  # ENABLE_LLM_FAILOVER=false


def test_no_failover_when_switched_off(slow: Any, slow_api: httpx.Client, slow_stack: Stack) -> None:
    slow.fault("anthropic", status=529)
    resp = slow_api.post(COMPLETIONS, json=OPUS)

    err = failed(resp, 503, "service_unavailable", True, slow_stack)
    assert tried(err["attempts"]) == [("anthropic", "service_unavailable")] * 2
    assert slow.calls("openai") == 0


def test_every_job_gives_its_worker_slot_back(
    tuned_api: httpx.Client, tuned: Any, tuned_stack: Stack, redis_of: Any
) -> None:
    """Jobs handed straight to a worker take one of its slots; whatever their end (answered, a final
    error, failed over to the other provider), the slot comes back and the next job is handed over too."""
    r = redis_of(tuned_stack)
    free = {p: r.hgetall(keys.worker_room(p)) for p in ("openai", "anthropic")}
    assert free["anthropic"] and set(free["anthropic"].values()) == {"1"}  # the one-slot worker, idle

    assert tuned_api.post(COMPLETIONS, json=GPT4).status_code == 200
    tuned.fault("openai", status=400, count=1)
    assert tuned_api.post(COMPLETIONS, json=GPT4).status_code == 400
    tuned.fault("openai", status=503, count=3)
    moved = tuned_api.post(COMPLETIONS, json=GPT4)
    assert moved.status_code == 200 and moved.json()["data"]["provider"] == "anthropic"
    for _ in range(3):
        assert tuned_api.post(COMPLETIONS, json=OPUS).status_code == 200

    wait_until(lambda: {p: r.hgetall(keys.worker_room(p)) for p in free} == free, 10, "every worker slot given back")
    assert r.zcard(keys.queue("anthropic")) == 0 and r.zcard(keys.queue("openai")) == 0
