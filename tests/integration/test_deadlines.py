"""A request's deadline travels with its job: no provider call starts for a caller who has stopped
waiting, a call under way is cut at the deadline, and the caller's 504 comes at its deadline.

The tuned stack's only Anthropic worker has one job slot: a job held there by a `hang` fault keeps
every later Anthropic request waiting in the queue, so a deadline can pass while a request is queued.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys

COMPLETIONS = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"


def chat(provider: str, content: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "provider": provider, **extra}


def hold_the_only_anthropic_slot(tuned: Any, api: httpx.Client, r: Any) -> dict[str, Any]:
    tuned.fault("anthropic", mode="hang", count=1, seconds=60)
    held: dict[str, Any] = api.post(JOBS, json=chat("anthropic", "held")).json()["data"]
    wait_until(lambda: r.hget(keys.request(held["id"]), "status") == "running", 15, "held job running")
    tuned.wait_in_flight("anthropic")
    return held


def test_a_request_whose_deadline_passes_in_the_queue_never_reaches_the_provider(
    tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any
) -> None:
    r = redis_of(tuned_stack)
    held = hold_the_only_anthropic_slot(tuned, tuned_api, r)

    started = time.monotonic()
    resp = tuned_api.post(COMPLETIONS, json=chat("anthropic", "queued", timeout=1))
    elapsed = time.monotonic() - started
    assert resp.status_code == 504, resp.text
    assert 0.9 <= elapsed < 1.5, elapsed  # at its deadline, not seconds later
    rid = resp.json()["error"]["jobId"]

    tuned.release()  # the held call answers; the slot frees and the worker takes the queued job
    assert tuned_api.get(held["statusUrl"], params={"wait": 20}).json()["data"]["status"] == "succeeded"
    view = tuned_api.get(f"{JOBS}/{rid}", params={"wait": 20}).json()["data"]
    assert view["status"] == "failed", view
    assert view["error"]["type"] == "timeout_error"
    assert view["error"]["attempts"] == []  # no provider was tried
    assert tuned.requests("anthropic", rid) == []  # never reached the provider: nobody paid for it
    assert len(tuned.requests("anthropic")) == 1  # the held one only


def test_a_call_under_way_is_cut_at_the_deadline(tuned: Any, tuned_api: httpx.Client) -> None:
    tuned.fault("openai", mode="hang", count=1, seconds=60)
    started = time.monotonic()
    resp = tuned_api.post(COMPLETIONS, json=chat("openai", timeout=1))
    assert resp.status_code == 504, resp.text
    assert 0.9 <= time.monotonic() - started < 1.5
    err = resp.json()["error"]
    assert err["type"] == "timeout_error" and err["retryable"] is True
    assert err["statusUrl"] == f"{JOBS}/{err['jobId']}"

    # the worker gave up the call at the deadline (not after the provider's 120 s read timeout), and
    # neither retried it nor failed over: one call, at the provider that hung
    view = tuned_api.get(err["statusUrl"], params={"wait": 10}).json()["data"]
    assert view["status"] == "failed", view
    assert view["error"]["type"] == "timeout_error"
    assert [a["provider"] for a in view["error"]["attempts"]] == ["openai"]
    assert len(tuned.requests("openai", err["jobId"])) == 1
    assert tuned.requests("anthropic", err["jobId"]) == []


def test_an_async_jobs_timeout_is_its_budget_once_started(
    tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any
) -> None:
    r = redis_of(tuned_stack)
    held = hold_the_only_anthropic_slot(tuned, tuned_api, r)
    # queued behind the held job for longer than its timeout: the queue does not count against it
    job = tuned_api.post(JOBS, json=chat("anthropic", "budget", timeout=1)).json()["data"]
    time.sleep(1.5)  # the job's whole budget passes while it waits in the queue (what is tested)
    tuned.release()
    assert tuned_api.get(held["statusUrl"], params={"wait": 20}).json()["data"]["status"] == "succeeded"
    view = tuned_api.get(job["statusUrl"], params={"wait": 20}).json()["data"]
    assert view["status"] == "succeeded", view

    # once started, the budget bounds it: a hung call ends with a timeout after about a second
    tuned.fault("anthropic", mode="hang", count=1, seconds=60)
    job = tuned_api.post(JOBS, json=chat("anthropic", "hung", timeout=1)).json()["data"]
    started = time.monotonic()
    view = tuned_api.get(job["statusUrl"], params={"wait": 20}).json()["data"]
    assert view["status"] == "failed" and view["error"]["type"] == "timeout_error", view
    assert time.monotonic() - started < 3


def test_no_retry_or_failover_hop_starts_after_the_deadline(tuned: Any, tuned_api: httpx.Client) -> None:
    # every OpenAI call takes 0.6 s and fails with a retryable 503: the second attempt is under way at
    # the 1 s deadline; before, a third attempt and a failover hop to Anthropic followed, for nobody
    tuned.fault("openai", mode="slow", latency_ms=600)
    tuned.fault("openai", mode="status", status=503)
    resp = tuned_api.post(COMPLETIONS, json=chat("openai", timeout=1))
    assert resp.status_code == 504, resp.text
    rid = resp.json()["error"]["jobId"]
    view = tuned_api.get(f"{JOBS}/{rid}", params={"wait": 10}).json()["data"]
    assert view["status"] == "failed" and view["error"]["type"] == "timeout_error", view
    assert [a["provider"] for a in view["error"]["attempts"]] == ["openai", "openai"]
    assert len(tuned.requests("openai", rid)) == 2
    assert tuned.requests("anthropic", rid) == []
