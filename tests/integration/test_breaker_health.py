"""Circuit breakers, health and routing by health, through the API, real workers and the simulator.

Two stacks of this module's own (breaker state is shared by every process of a stack, so these tests
stay away from the session stack):
- `steady`: a long cooldown, so an opened breaker stays open while the test looks at it;
- `racing`: three OpenAI workers, a one-second cooldown and two half-open probes, a fast health
  monitor with a short lease (its holder gets SIGKILLed in the last test).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from devstack.procs import wait_until
from devstack.stack import Stack
from shared import keys
from shared.breaker import reset_sync
from tests.integration.conftest import start_stack as start_own_stack

CHAT = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"
CHAT_PATHS = {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"}
COMMON = {
    "RETRY_MAX_ATTEMPTS": "1",  # one call per provider per request: calls and failures line up
    "RETRY_BASE_DELAY_S": "0.01",
    "WORKER_LEASE_S": "1.5",
    "WORKER_POLL_FALLBACK_S": "0.5",
    "BREAKER_FAILURE_THRESHOLD": "3",
    "BREAKER_MIN_REQUESTS": "1000",  # the streak decides here; the error-rate rule has unit tests
    "HEALTH_MIN_REQUESTS": "3",
    "PROVIDER_READ_TIMEOUT_S": "30",
    # conftest's quiet defaults switch these off; here they are what is tested
    "HEALTH_MONITOR_ENABLED": "true",
    "PROVIDER_KEY_COOLDOWN_S": "300",
}


def start_stack(openai_workers: int, **env: str) -> Stack:
    """A stack of this module's own: conftest's, with the breaker and health settings above."""
    return start_own_stack({"openai": [{}] * openai_workers, "anthropic": [{}]}, **{**COMMON, **env})


@pytest.fixture(scope="module")
def steady() -> Iterator[Stack]:
    s = start_stack(1, BREAKER_COOLDOWN_S="60", ALERT_LATENCY_MS="300", HEALTH_CHECK_INTERVAL_S="0.5")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def racing() -> Iterator[Stack]:
    s = start_stack(
        3,
        BREAKER_COOLDOWN_S="1",
        BREAKER_HALF_OPEN_PROBES="2",
        HEALTH_CHECK_INTERVAL_S="0.2",
        HEALTH_MONITOR_LEASE_S="1",
    )
    try:
        yield s
    finally:
        s.stop()


class Env:
    """One stack, seen by a test: the API, the simulator's control API and Redis."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.api = stack.client()
        self.redis = redis.Redis.from_url(stack.redis_url, decode_responses=True)

    def close(self) -> None:
        self.api.close()
        self.redis.close()

    def fresh(self) -> None:
        """No faults, closed breakers, no passive figures, and every view told so."""
        self.stack.sim("POST", "/_control/reset").raise_for_status()
        for p in CHAT_PATHS:
            for key in self.redis.scan_iter(match=keys.health_bucket(p, 0)[:-1] + "*"):
                self.redis.delete(key)
        reset_sync(self.redis)
        wait_until(lambda: not self.status()["routing"]["avoiding"], 10, "routing view reset")

    def fault(self, provider: str, **rule: Any) -> None:
        self.stack.sim("POST", "/_control/faults", json={"provider": provider, **rule}).raise_for_status()

    def release(self) -> None:
        self.stack.sim("DELETE", "/_control/faults").raise_for_status()

    def calls(self, provider: str) -> int:
        stats = self.stack.sim("GET", "/_control/stats", params={"arrivals": "0"}).json()
        return int(stats[provider]["by_path"].get(CHAT_PATHS[provider], 0))

    def in_flight(self, provider: str) -> int:
        return int(self.stack.sim("GET", "/_control/stats", params={"arrivals": "0"}).json()[provider]["in_flight"])

    def chat(self, **extra: Any) -> dict[str, Any]:
        resp = self.api.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], **extra})
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()["data"]
        return data

    def health(self) -> dict[str, Any]:
        resp = self.api.get("/api/v1/llm/health")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()["data"]
        return data

    def status(self) -> dict[str, Any]:
        resp = self.api.get("/api/v1/llm/status")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()["data"]
        return data

    def breaker(self, provider: str) -> dict[str, Any]:
        out: dict[str, Any] = self.health()["providers"][provider]["breaker"]
        return out

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        resp = self.api.get(f"{JOBS}/{job_id}", params={"wait": wait} if wait else None)
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()["data"]
        return data


@pytest.fixture
def steady_env(steady: Stack) -> Iterator[Env]:
    env = Env(steady)
    env.fresh()
    try:
        yield env
    finally:
        env.fresh()
        env.close()


@pytest.fixture
def racing_env(racing: Stack) -> Iterator[Env]:
    env = Env(racing)
    env.fresh()
    try:
        yield env
    finally:
        env.fresh()
        env.close()


def test_health_and_status_answer_in_specs_shape(steady_env: Env) -> None:
    assert httpx.get(f"{steady_env.stack.api_url}/api/v1/llm/health").status_code == 401
    steady_env.chat()
    health = steady_env.health()
    assert health["overall"] == "healthy"
    for provider in ("openai", "anthropic"):
        figures = health["providers"][provider]
        assert figures["status"] == "healthy"
        assert {"latency", "successRate", "errorRate", "score", "breaker"} <= set(figures)
        assert figures["breaker"]["state"] == "closed"
    assert health["providers"]["openai"]["successRate"] == 1.0
    assert isinstance(health["providers"]["openai"]["latency"], int)

    status = steady_env.status()
    assert status["version"] and status["uptime"] >= 0
    assert status["redis"]["reachable"] is True
    assert status["providers"]["openai"] == {"queueDepth": 0, "workers": 1}
    assert status["providers"]["anthropic"] == {"queueDepth": 0, "workers": 1}
    wait_until(lambda: steady_env.status()["healthMonitor"]["holder"] is not None, 10, "a monitor holder")


def test_health_follows_injected_latency_and_errors(steady_env: Env) -> None:
    env = steady_env
    # latency: anthropic answers in 400 ms, above this stack's 300 ms alert threshold
    env.stack.sim("POST", "/_control/latency", json={"provider": "anthropic", "ms": 400}).raise_for_status()
    for _ in range(3):
        env.chat(provider="anthropic")
    # a call's figures are recorded just after its answer, not before it
    wait_until(lambda: env.health()["providers"]["anthropic"]["status"] == "degraded", 5, "anthropic degraded")
    anthropic = env.health()["providers"]["anthropic"]
    assert anthropic["status"] == "degraded" and anthropic["latency"] >= 400
    assert any("latency" in r for r in anthropic["reasons"])
    env.stack.sim("POST", "/_control/latency", json={"provider": "anthropic", "ms": 5}).raise_for_status()

    # errors: 2 failed calls out of 10 (never 3 in a row): 20% is degraded, the breaker stays closed
    env.fault("openai", mode="status", status=500, count=2)
    for _ in range(10):
        env.chat(provider="openai")  # the two failures fail over and still succeed
    wait_until(lambda: env.health()["providers"]["openai"]["successRate"] == pytest.approx(0.8), 5, "10 calls counted")
    openai = env.health()["providers"]["openai"]
    assert openai["status"] == "degraded"
    assert openai["errorRate"] == pytest.approx(0.2) and openai["successRate"] == pytest.approx(0.8)
    assert openai["breaker"]["state"] == "closed"
    assert env.health()["overall"] == "degraded"

    # failing throughout: the breaker opens and the provider is unhealthy; the gateway still serves
    env.fault("openai", mode="status", status=503)
    for _ in range(3):
        env.chat(provider="openai")
    openai = env.health()["providers"]["openai"]
    assert openai["status"] == "unhealthy" and openai["score"] == 0
    assert openai["breaker"]["state"] == "open"
    assert env.health()["overall"] == "degraded"


def test_the_breaker_opens_at_its_threshold_and_routing_skips_the_open_provider(steady_env: Env) -> None:
    env = steady_env
    env.fault("openai", mode="status", status=503)
    for i in range(3):
        assert env.breaker("openai")["state"] == "closed", f"opened after {i} failures"
        served = env.chat()  # primary: openai fails once, the request fails over
        assert served["provider"] == "anthropic"
        assert [a["provider"] for a in served["attempts"]] == ["openai", "anthropic"]
    assert env.breaker("openai")["state"] == "open"
    assert env.health()["providers"]["openai"]["consecutiveFailures"] == 3
    wait_until(lambda: env.status()["routing"]["avoiding"] == ["openai"], 10, "the API routes around openai")

    # straight to the secondary: openai is not called, not even tried
    before = env.calls("openai")
    for _ in range(5):
        served = env.chat()
        assert served["provider"] == "anthropic"
        assert [a["provider"] for a in served["attempts"]] == ["anthropic"]
    # a request that names openai reaches its worker, whose breaker refuses at once and fails over
    served = env.chat(provider="openai")
    assert served["provider"] == "anthropic"
    refused = served["attempts"][0]
    assert refused["provider"] == "openai" and refused["error"]["type"] == "service_unavailable"
    assert "circuit breaker" in refused["error"]["message"]
    assert env.calls("openai") == before


def test_without_failover_an_open_breaker_answers_service_unavailable(steady_env: Env) -> None:
    env = steady_env
    env.fault("openai", mode="status", status=503)
    for _ in range(3):
        env.chat(provider="openai")
    assert env.breaker("openai")["state"] == "open"
    before = env.calls("openai")
    # the admin provider test runs a real request with failover off
    with env.stack.client(role="admin") as admin:
        resp = admin.post("/api/v1/llm/test", json={"providers": ["openai"]})
    assert resp.status_code == 200, resp.text
    report = resp.json()["data"]["providers"]["openai"]
    assert report["ok"] is False
    assert report["error"]["type"] == "service_unavailable" and report["error"]["retryable"] is True
    assert "circuit breaker" in report["error"]["message"]
    assert env.calls("openai") == before


def test_half_open_admits_exactly_the_configured_probes_across_workers(racing_env: Env) -> None:
    env = racing_env
    env.fault("openai", mode="status", status=503)
    for _ in range(3):
        env.chat(provider="openai")
    opened = env.breaker("openai")
    assert opened["state"] == "open"

    # the provider now holds every call it gets: the probes stay in flight while the others race
    env.release()
    env.fault("openai", mode="hang")
    before = env.calls("openai")
    wait_until(lambda: time.time() * 1000 >= opened["openUntil"], 10, "the cooldown to end")
    ids = []
    for _ in range(24):
        resp = env.api.post(JOBS, json={"messages": [{"role": "user", "content": "hi"}], "provider": "openai"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["data"]["id"])
    # three workers race for the probe slots: exactly two calls reach openai, the rest fail over
    wait_until(lambda: env.in_flight("openai") >= 2, 15, "two probes held at openai")
    wait_until(lambda: sum(env.job(i)["status"] == "succeeded" for i in ids) >= 22, 30, "the refused jobs to fail over")
    ended = {i: env.job(i) for i in ids}
    moved = [i for i, view in ended.items() if view["status"] == "succeeded"]
    held = [i for i, view in ended.items() if view["status"] == "running"]
    assert len(held) == 2 and len(moved) == 22
    assert all(ended[i]["provider"] == "anthropic" for i in moved)
    assert env.calls("openai") - before == 2
    assert env.breaker("openai")["state"] == "half_open"

    # the probes succeed: the breaker closes, and openai serves again
    env.release()
    for i in held:
        view = env.job(i, wait=15)
        assert view["status"] == "succeeded" and view["provider"] == "openai"
    # a probe's success is recorded just after its answer, not before it
    wait_until(lambda: env.breaker("openai")["state"] == "closed", 5, "the probes to close the breaker")
    assert env.chat(provider="openai")["provider"] == "openai"
    wait_until(lambda: not env.status()["routing"]["avoiding"], 10, "routing back to openai")
    assert env.chat()["provider"] == "openai"


def test_a_failed_probe_reopens_the_breaker(racing_env: Env) -> None:
    env = racing_env
    env.fault("openai", mode="status", status=503)
    for _ in range(3):
        env.chat(provider="openai")
    opened = env.breaker("openai")
    wait_until(lambda: time.time() * 1000 >= opened["openUntil"], 10, "the cooldown to end")
    served = env.chat(provider="openai")  # a probe, and it fails: served by anthropic
    assert served["provider"] == "anthropic"
    reopened = env.breaker("openai")
    assert reopened["state"] == "open" and reopened["openUntil"] > opened["openUntil"]


def monitor_runs(env: Env) -> dict[str, int]:
    raw: dict[str, str] = env.redis.hgetall(keys.monitor_runs())  # type: ignore[assignment]
    return {k: int(v) for k, v in raw.items()}


def runs_during(env: Env, cycles: int) -> dict[str, int]:
    """Cycles each holder ran while the monitor as a whole ran `cycles` more."""
    before = monitor_runs(env)
    wait_until(lambda: sum(monitor_runs(env).values()) >= sum(before.values()) + cycles, 20, f"{cycles} cycles")
    after = monitor_runs(env)
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0) > 0}


def test_one_monitor_runs_across_workers_and_another_takes_over_when_it_dies(racing_env: Env) -> None:
    env = racing_env
    workers = [p for procs in env.stack.workers.values() for p in procs]
    assert len(workers) == 4
    ran = runs_during(env, 5)
    assert len(ran) == 1, f"more than one monitor ran: {ran}"
    (holder,) = ran
    assert env.status()["healthMonitor"]["holder"] == holder

    pid = int(holder.split(":")[2])
    (victim,) = [p for p in workers if p.popen.pid == pid]
    victim.kill(signal.SIGKILL)
    victim.popen.wait(10)

    wait_until(lambda: env.status()["healthMonitor"]["holder"] not in (None, holder), 15, "a new monitor holder")
    ran = runs_during(env, 5)
    assert len(ran) == 1 and holder not in ran, ran
    assert env.health()["providers"]["openai"]["probe"]["ok"] is True
