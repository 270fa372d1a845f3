"""Fixtures of the integration suite: a handle on the simulated upstream, and stacks of our own.

The session `stack` (tests/conftest.py) serves the tests that inject no provider failures. Modules that
do, or that need what the session stack cannot show, get a stack of their own:
- tuned (session-scoped, started by the first test that asks for it): two OpenAI workers (one can be
  SIGKILLed), a one-slot Anthropic worker (jobs wait behind it and can be cancelled), an OpenAI
  organization and a non-default result TTL;
- slow (module-scoped): provider calls time out after 1 s, two calls per provider, failover off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from openai import OpenAI

from devstack.procs import start_redis, wait_until
from devstack.stack import Stack

CHAT_PATHS = {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"}
TUNED_RESULT_TTL_S = 4321
TUNED_ORGANIZATION = "org-gateway-tests"


class Upstream:
    """The simulator of one stack, through its `/_control` API."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def reset(self) -> None:
        self.stack.sim("POST", "/_control/reset").raise_for_status()

    def fault(self, provider: str, **rule: Any) -> str:
        resp = self.stack.sim("POST", "/_control/faults", json={"provider": provider, **rule})
        resp.raise_for_status()
        return str(resp.json()["id"])

    def release(self) -> None:
        """Drop every fault and let requests held by `hang` faults go on."""
        self.stack.sim("DELETE", "/_control/faults").raise_for_status()

    def config(self, **body: Any) -> None:
        self.stack.sim("POST", "/_control/config", json=body).raise_for_status()

    def stats(self) -> dict[str, Any]:
        resp = self.stack.sim("GET", "/_control/stats", params={"arrivals": "0"})
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def calls(self, provider: str) -> int:
        """Completion calls the provider received (faulted or not)."""
        return int(self.stats()[provider]["by_path"].get(CHAT_PATHS[provider], 0))

    def in_flight(self, provider: str) -> int:
        return int(self.stats()[provider]["in_flight"])

    def requests(self, provider: str | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded completion calls, oldest first; only those of one gateway request if `request_id`."""
        params = {"limit": "1000", **({"provider": provider} if provider else {})}
        resp = self.stack.sim("GET", "/_control/requests", params=params)
        resp.raise_for_status()
        found = [r for r in resp.json()["requests"] if r["path"] in CHAT_PATHS.values()]
        if request_id is not None:
            found = [r for r in found if r["headers"].get("x-request-id") == request_id]
        return found

    def wait_in_flight(self, provider: str, n: int = 1, timeout: float = 15) -> None:
        wait_until(lambda: self.in_flight(provider) >= n, timeout, f"{n} request(s) held at {provider}")


def user_chat(content: str = "Hello, how are you?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture
def upstream(sim: Stack) -> Upstream:
    """The session stack's simulator, reset before and after the test (by `sim`)."""
    return Upstream(sim)


# What a stack of our own needs so that one test's injected failures cannot change how the next test is
# served: breakers and passive health never trip, limits never bind, a refused key is not set aside.
QUIET_ENV = {
    "RETRY_BASE_DELAY_S": "0.01",
    "RETRY_MAX_DELAY_S": "0.5",
    "WORKER_LEASE_S": "1.5",
    "WORKER_POLL_FALLBACK_S": "0.5",
    "BREAKER_FAILURE_THRESHOLD": "1000000",
    "BREAKER_MIN_REQUESTS": "1000000",
    "HEALTH_MIN_REQUESTS": "1000000",
    "HEALTH_MONITOR_ENABLED": "false",
    "PROVIDER_KEY_COOLDOWN_S": "0",
    **{
        f"RATE_LIMIT_{scope}_{unit}": "100000000"
        for scope in ("GLOBAL", "OPENAI", "ANTHROPIC")
        for unit in ("RPM", "TPM")
    },
    "TENANT_DEFAULT_RPM": "100000000",
    "TENANT_DEFAULT_TPM": "100000000",
}


def start_stack(workers: dict[str, list[dict[str, str]]], **env: str) -> Stack:
    """A stack of our own: `workers` gives each provider's worker processes by their extra env."""
    s = Stack()
    try:
        _, redis_url = start_redis(s.group)
        s.start_simulator(latency_ms=5)
        s.configure(redis_url, **{**QUIET_ENV, **env})
        for provider, extras in workers.items():
            for extra in extras:
                s.start_worker(provider, extra)
        s.wait_workers({p: len(extras) for p, extras in workers.items()})
        s.start_api()
    except BaseException:
        dump_logs(s)
        s.stop()
        raise
    return s


def dump_logs(stack: Stack) -> None:
    for proc in stack.group.procs:
        print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")


@pytest.fixture(scope="session")
def tuned_stack() -> Iterator[Stack]:
    """Two OpenAI workers, one single-slot Anthropic worker, an organization and a short result TTL."""
    s = start_stack(
        {"openai": [{}, {}], "anthropic": [{"WORKER_MAX_JOBS": "1"}]},
        OPENAI_ORGANIZATION=TUNED_ORGANIZATION,
        RESULT_TTL_S=str(TUNED_RESULT_TTL_S),
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def slow_stack() -> Iterator[Stack]:
    """Provider calls time out after 1 s, two calls per provider, failover off."""
    s = start_stack(
        {"openai": [{}], "anthropic": [{}]},
        RETRY_MAX_ATTEMPTS="2",
        PROVIDER_READ_TIMEOUT_S="1",
        ENABLE_LLM_FAILOVER="false",
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def slow(slow_stack: Stack) -> Iterator[Upstream]:
    up = Upstream(slow_stack)
    up.reset()
    yield up
    up.reset()


@pytest.fixture
def slow_api(slow_stack: Stack) -> Iterator[httpx.Client]:
    with slow_stack.client(role="user") as client:
        yield client


@pytest.fixture
def tuned(tuned_stack: Stack) -> Iterator[Upstream]:
    """The tuned stack's simulator, reset before and after the test."""
    up = Upstream(tuned_stack)
    up.reset()
    yield up
    up.reset()


@pytest.fixture
def tuned_api(tuned_stack: Stack) -> Iterator[httpx.Client]:
    with tuned_stack.client(role="user") as client:
        yield client


@pytest.fixture
def sdk(sim: Stack) -> Iterator[OpenAI]:
    """The official `openai` package pointed at the session's stack (only base_url and the key changed)."""
    client = OpenAI(base_url=f"{sim.api_url}/v1", api_key=sim.token(sub="sdk-user"), max_retries=0, timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_of() -> Iterator[Any]:
    """`redis_of(stack)`: a synchronous Redis client of that stack (closed at the end of the session)."""
    clients: dict[str, redis.Redis] = {}

    def get(stack: Stack) -> redis.Redis:
        if stack.redis_url not in clients:
            clients[stack.redis_url] = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        return clients[stack.redis_url]

    yield get
    for client in clients.values():
        client.close()
