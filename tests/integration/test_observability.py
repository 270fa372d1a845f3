"""Observability end to end, on a stack of its own (its own Redis, so every count is exact): cost in
the answer, the correlation id from header to upstream to logs, PII-free stored logs, SPEC metrics,
Prometheus from two API processes, and an alert raised by real failures."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys
from shared.pricing import catalogue_models

pytestmark = pytest.mark.timeout(180)

COMPLETIONS = "/api/v1/llm/chat/completions"
OVERRIDE = {"gpt-4-turbo": {"input": 0.5, "output": 1.5}}
MAX_MODELS = 3

# Realistic personal data, and the substrings that must never be stored.
PII_PROMPT = (
    "Hi, I'm Jane. Email me at jane.doe@example.com or call +1 (415) 555-0123. "
    "Ship it to 1600 Amphitheatre Parkway, Mountain View. My card is 4111 1111 1111 1111 "
    "and my SSN is 123-45-6789. Server is 203.0.113.77, key sk-proj-AbCdEf0123456789AbCdEf0123456789."
)
PII_SUBSTRINGS = [
    "jane.doe@example.com",
    "555-0123",
    "1600 Amphitheatre",
    "4111 1111 1111 1111",
    "123-45-6789",
    "203.0.113.77",
    "AbCdEf0123456789",
]


class Upstream:
    """The simulator of the stack, through its `/_control` API."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def reset(self) -> None:
        self.stack.sim("POST", "/_control/reset").raise_for_status()

    def fault(self, provider: str, **rule: Any) -> None:
        self.stack.sim("POST", "/_control/faults", json={"provider": provider, **rule}).raise_for_status()

    def requests(self, provider: str, request_id: str) -> list[dict[str, Any]]:
        """Recorded calls to the provider that carried this X-Request-ID."""
        resp = self.stack.sim("GET", "/_control/requests", params={"limit": "1000", "provider": provider})
        resp.raise_for_status()
        return [r for r in resp.json()["requests"] if r["headers"].get("x-request-id") == request_id]


def user_chat(content: str = "Hello, how are you?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def obs() -> Iterator[Stack]:
    s = Stack()
    try:
        s.start(
            workers=1,
            latency_ms=5,
            api_processes=2,
            RETRY_BASE_DELAY_S="0.01",
            RETRY_MAX_DELAY_S="0.5",
            WORKER_LEASE_S="1.5",
            WORKER_POLL_FALLBACK_S="0.5",
            PRICE_OVERRIDES=orjson.dumps(OVERRIDE).decode(),
            LOG_CONTENT_MAX_CHARS="400",
            ALERT_MIN_REQUESTS="3",
            ALERT_EVAL_INTERVAL_S="0.2",
            METRICS_MAX_MODELS=str(MAX_MODELS),
            LOG_LEVEL="INFO",
        )
        yield s
    except BaseException:
        for proc in s.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")
        raise
    finally:
        s.stop()


@pytest.fixture
def up(obs: Stack) -> Iterator[Upstream]:
    upstream = Upstream(obs)
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="module")
def user(obs: Stack) -> Iterator[httpx.Client]:
    with obs.client(role="user") as client:
        yield client


@pytest.fixture(scope="module")
def admin(obs: Stack) -> Iterator[httpx.Client]:
    with obs.client(role="admin") as client:
        yield client


def logs_of(admin: httpx.Client, correlation_id: str) -> list[dict[str, Any]]:
    resp = admin.get("/api/v1/llm/logs", params={"limit": 1000})
    resp.raise_for_status()
    return [e for e in resp.json()["data"]["logs"] if e["correlationId"] == correlation_id]


def wait_logs(admin: httpx.Client, correlation_id: str, types: set[str]) -> list[dict[str, Any]]:
    """The observer writes after the caller is answered: wait for the entries to land."""
    found: list[dict[str, Any]] = []

    def landed() -> bool:
        found[:] = logs_of(admin, correlation_id)
        return {e["type"] for e in found} >= types

    wait_until(landed, 15, f"log entries {types} of {correlation_id}")
    return found


def metrics(client: httpx.Client, **params: str) -> dict[str, Any]:
    resp = client.get("/api/v1/llm/metrics", params=params)
    resp.raise_for_status()
    body = resp.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


# -- cost ----------------------------------------------------------------------------------------------


def test_cost_in_the_answer_follows_spec_prices_overrides_and_unknown_models(obs: Stack, user: httpx.Client) -> None:
    spec = user.post(COMPLETIONS, json=user_chat(model="gpt-4")).json()["data"]
    usage = spec["usage"]
    assert spec["cost"]["promptCost"] == pytest.approx(usage["promptTokens"] * 0.03 / 1000)
    assert spec["cost"]["completionCost"] == pytest.approx(usage["completionTokens"] * 0.06 / 1000)

    overridden = user.post(COMPLETIONS, json=user_chat(model="gpt-4-turbo")).json()["data"]
    usage = overridden["usage"]
    assert overridden["cost"]["promptCost"] == pytest.approx(usage["promptTokens"] * 0.5 / 1000)
    assert overridden["cost"]["completionCost"] == pytest.approx(usage["completionTokens"] * 1.5 / 1000)

    unknown = user.post(COMPLETIONS, json=user_chat(model="gpt-9-preview-test"))
    assert unknown.status_code == 200
    assert unknown.json()["data"]["cost"] is None
    wait_until(
        lambda: "no price known for model 'gpt-9-preview-test'" in obs.workers["openai"][0].log(), 10, "pricing warning"
    )


# -- correlation id --------------------------------------------------------------------------------------


def test_request_id_goes_from_header_to_upstream_to_logs_and_back(
    obs: Stack, up: Upstream, user: httpx.Client, admin: httpx.Client
) -> None:
    cid = f"trace-{uuid.uuid4().hex[:12]}"
    resp = user.post(COMPLETIONS, json=user_chat(model="gpt-4"), headers={"X-Request-ID": cid})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == cid
    assert len(up.requests("openai", request_id=cid)) == 1  # the provider saw the same id

    entries = wait_logs(admin, cid, {"request", "response"})
    assert {e["requestId"] for e in entries} == {resp.json()["data"]["id"]}


def test_worker_log_lines_carry_the_request_id(obs: Stack, up: Upstream, user: httpx.Client) -> None:
    cid = f"failover-{uuid.uuid4().hex[:12]}"
    up.fault("openai", mode="status", status=503, count=3)  # every retry fails: the worker logs a failover
    resp = user.post(COMPLETIONS, json=user_chat(model="gpt-4"), headers={"X-Request-ID": cid})
    assert resp.status_code == 200 and resp.json()["data"]["provider"] == "anthropic"

    def failover_line() -> dict[str, Any] | None:
        for line in obs.workers["openai"][0].log().splitlines():
            if line.startswith("{") and "failed over" in line and cid in line:
                parsed: dict[str, Any] = orjson.loads(line)
                return parsed
        return None

    wait_until(lambda: failover_line() is not None, 10, "the worker's failover log line")
    line = failover_line()
    assert line is not None and line["correlation_id"] == cid and line["request_id"] == resp.json()["data"]["id"]


def test_async_jobs_carry_the_request_id_too(up: Upstream, user: httpx.Client, admin: httpx.Client) -> None:
    cid = f"job-{uuid.uuid4().hex[:12]}"
    resp = user.post("/api/v1/llm/jobs", json=user_chat(provider="anthropic"), headers={"X-Request-ID": cid})
    assert resp.status_code == 202 and resp.headers["X-Request-ID"] == cid
    job = user.get(f"/api/v1/llm/jobs/{resp.json()['data']['id']}", params={"wait": 10}).json()["data"]
    assert job["status"] == "succeeded"
    assert len(up.requests("anthropic", request_id=cid)) == 1
    assert {e["type"] for e in wait_logs(admin, cid, {"request", "response"})} == {"request", "response"}


@pytest.mark.parametrize("bad", ["has spaces in it", "x" * 129, "tab\there"])
def test_an_unusable_request_id_is_replaced_by_the_job_id(up: Upstream, user: httpx.Client, bad: str) -> None:
    resp = user.post(COMPLETIONS, json=user_chat(model="gpt-4"), headers={"X-Request-ID": bad})
    assert resp.status_code == 200
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid == resp.json()["data"]["id"]
    assert len(up.requests("openai", request_id=rid)) == 1


def test_every_answer_carries_a_request_id(obs: Stack) -> None:
    refused = httpx.post(f"{obs.api_url}{COMPLETIONS}", json=user_chat(), timeout=10)  # no token
    assert refused.status_code == 401 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["X-Request-ID"])
    echoed = httpx.get(f"{obs.api_url}/livez", headers={"X-Request-ID": "probe-1"}, timeout=10)
    assert echoed.headers["X-Request-ID"] == "probe-1"


# -- privacy ---------------------------------------------------------------------------------------------


def test_stored_logs_hold_no_pii(obs: Stack, up: Upstream, user: httpx.Client, admin: httpx.Client) -> None:
    cid = f"pii-{uuid.uuid4().hex[:12]}"
    body = user_chat(PII_PROMPT + " " + "lorem ipsum " * 100, model="gpt-4", user="jane.doe@example.com")
    assert user.post(COMPLETIONS, json=body, headers={"X-Request-ID": cid}).status_code == 200
    # a provider error that echoes the prompt back
    up.fault("openai", mode="status", status=400, count=1, message=f"Invalid content: {PII_PROMPT}")
    failed = user.post(COMPLETIONS, json=body, headers={"X-Request-ID": cid})
    assert failed.status_code == 400

    entries = wait_logs(admin, cid, {"request", "response", "error"})
    request = next(e for e in entries if e["type"] == "request")
    response = next(e for e in entries if e["type"] == "response")
    assert request["estimatedTokens"] > 100 and request["params"]["user"] == "[EMAIL]"
    content = request["params"]["messages"][0]["content"]
    assert "[EMAIL]" in content and "[CARD]" in content and "truncated" in content  # masked, then cut
    assert response["usage"]["totalTokens"] > 0 and response["cost"]["currency"] == "USD"
    error = next(e for e in entries if e["type"] == "error")
    assert error["error"]["type"] == "invalid_request_error" and len(error["attempts"]) == 1

    served = orjson.dumps(entries).decode()
    stored = redis.Redis.from_url(obs.redis_url).xrange(keys.request_logs())
    raw = b"".join(v for _, fields in stored for v in fields.values()).decode()
    for secret in PII_SUBSTRINGS:
        assert secret not in served and secret not in raw, secret


def test_logs_are_for_admins_and_filter_by_type_provider_and_time(user: httpx.Client, admin: httpx.Client) -> None:
    assert user.get("/api/v1/llm/logs").status_code == 403
    errors = admin.get("/api/v1/llm/logs", params={"type": "error", "provider": "openai"}).json()["data"]["logs"]
    assert errors and all(e["type"] == "error" and e["provider"] == "openai" for e in errors)
    future = admin.get("/api/v1/llm/logs", params={"startTime": "2999-01-01T00:00:00Z"}).json()["data"]
    assert future["logs"] == [] and future["nextCursor"] is None
    bad = admin.get("/api/v1/llm/logs", params={"startTime": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "startTime"


# -- metrics ---------------------------------------------------------------------------------------------


def test_spec_metrics_count_what_was_sent(up: Upstream, user: httpx.Client) -> None:
    before = metrics(user, period="hour", provider="anthropic")
    for _ in range(3):
        assert user.post(COMPLETIONS, json=user_chat(model="claude-3-opus-20240229")).status_code == 200
    up.fault("anthropic", mode="status", status=400, count=1)
    assert user.post(COMPLETIONS, json=user_chat(model="claude-3-opus-20240229")).status_code == 400

    after: dict[str, Any] = {}

    def counted() -> bool:
        after.update(metrics(user, period="hour", provider="anthropic"))
        return bool(after["gateway"]["totalRequests"] >= before["gateway"]["totalRequests"] + 4)

    wait_until(counted, 15, "4 more requests in the metrics")
    gateway, perf = after["gateway"], after["performance"]
    assert gateway["totalRequests"] == before["gateway"]["totalRequests"] + 4
    assert gateway["successfulRequests"] == before["gateway"]["successfulRequests"] + 3
    assert gateway["failedRequests"] == before["gateway"]["failedRequests"] + 1
    assert gateway["uptime"] >= 0 and gateway["totalCost"] > before["gateway"]["totalCost"]
    assert perf["provider"] == "anthropic"
    assert perf["totalRequests"] == before["performance"]["totalRequests"] + 4
    assert perf["p95Latency"] >= perf["averageLatency"] > 0 or perf["averageLatency"] == 0
    opus = next(m for m in perf["topModels"] if m["model"] == "claude-3-opus-20240229")
    assert opus["count"] >= 4 and opus["avgLatency"] > 0
    openai_only = metrics(user, period="hour", provider="openai")
    unfiltered = metrics(user, period="hour")["gateway"]
    # the gateway part is unfiltered (uptime may tick between the two reads)
    assert {**openai_only["gateway"], "uptime": 0} == {**unfiltered, "uptime": 0}
    assert all(m["model"] != "claude-3-opus-20240229" for m in openai_only["performance"]["topModels"])
    week = metrics(user, period="week")
    assert week["gateway"]["totalRequests"] >= gateway["totalRequests"]
    assert user.get("/api/v1/llm/metrics", params={"period": "year"}).status_code == 422
    assert user.get("/api/v1/llm/metrics", params={"provider": "mistral"}).status_code == 422


def test_prometheus_scrapes_agree_across_api_processes_and_with_the_metrics(obs: Stack, admin: httpx.Client) -> None:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        resp = httpx.get(f"{obs.api_url}/metrics", timeout=10)  # no token: open to scrapers; a new connection
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
            if family.type in ("counter", "histogram")
        }

    first = scrape()
    assert all(scrape() == first for _ in range(6))  # several connections: both API processes answered alike
    completed = sum(v for (name, _), v in first.items() if name == "llm_gateway_completed_requests_total")
    assert completed == metrics(admin, period="week")["gateway"]["totalRequests"]  # every tenant's, as scraped
    assert any(name == "llm_gateway_request_latency_seconds_bucket" for name, _ in first)
    assert any(name == "llm_gateway_tokens_total" for name, _ in first)
    assert any(name == "llm_gateway_cost_usd_total" for name, _ in first)

    gauges = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(f"{obs.api_url}/metrics", timeout=10).text)
        for s in family.samples
        if family.type == "gauge"
    }
    for provider in ("openai", "anthropic"):
        assert gauges[("llm_gateway_workers", (("provider", provider),))] == 1
        states = [
            v
            for (name, labels), v in gauges.items()
            if name == "llm_gateway_breaker_state" and ("provider", provider) in labels
        ]
        assert sorted(states) == [0, 0, 1]  # closed, open, half_open: exactly one is current
    assert ("llm_gateway_rate_limit_available", (("scope", "global"), ("unit", "requests"))) in gauges


def test_made_up_model_names_fold_into_other_past_the_cap(obs: Stack, user: httpx.Client) -> None:
    def openai_models() -> dict[str, float]:
        text = httpx.get(f"{obs.api_url}/metrics", timeout=10).text
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "llm_gateway_requests_total" and s.labels["provider"] == "openai":
                    counts[s.labels["model"]] = counts.get(s.labels["model"], 0) + s.value
        return counts

    before = openai_models()
    names = [f"made-up-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    for name in [*names, "gpt-4"]:  # the simulator accepts any model name and answers with it
        assert user.post(COMPLETIONS, json=user_chat(model=name)).json()["data"]["model"] == name
    wait_until(lambda: sum(openai_models().values()) >= sum(before.values()) + 11, 15, "11 more requests")
    after = openai_models()
    catalogue = catalogue_models() | {"gpt-4-turbo"}  # the price override is configuration too
    admitted = {m for m in after if m not in catalogue and m != "other"}
    assert 0 < len(admitted) <= MAX_MODELS  # other tests' made-up names may hold places too
    assert after.get("other", 0) - before.get("other", 0) >= len(names) - MAX_MODELS
    assert after["gpt-4"] >= 1  # a catalogue name keeps its label past the cap


# -- alerts ----------------------------------------------------------------------------------------------


def test_failing_provider_raises_one_error_rate_alert(up: Upstream, user: httpx.Client) -> None:
    up.fault("anthropic", mode="status", status=400, count=30)
    for _ in range(30):
        assert user.post(COMPLETIONS, json=user_chat(provider="anthropic")).status_code == 400

    state: dict[str, Any] = {}

    def raised() -> bool:
        state.update(user.get("/api/v1/llm/alerts").json()["data"])
        return "anthropic" in state["degradedProviders"]

    wait_until(raised, 15, "error-rate alert on anthropic")
    active = [a for a in state["active"] if a["id"] == "error_rate:anthropic"]
    assert len(active) == 1 and active[0]["value"] > 0.1
    raises = [e for e in state["recent"] if e["id"] == "error_rate:anthropic" and e["event"] == "raised"]
    assert len(raises) == 1  # one episode, one alert: not one per failed request
