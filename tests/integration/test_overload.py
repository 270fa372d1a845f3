"""Refusals and deadlines do not wait for Redis's backlog.

Under a flood, every admission of an API process waits behind those sent before it on the process's
one admission lane: a 429 that takes 5 ms when idle took 3.3 s, and 504s came seconds after their
deadline. Here the backlog is made total and deterministic: Redis itself is stopped (SIGSTOP), so an
answer that still comes at once does not depend on Redis at all.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.procs import Proc
from devstack.stack import Stack
from tests.integration.conftest import Upstream, start_stack

COMPLETIONS = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"


@pytest.fixture(scope="module")
def quota_stack() -> Iterator[Stack]:
    s = start_stack(
        {"openai": [{}], "anthropic": [{}]},
        TENANT_QUOTAS=json.dumps({"bob": {"rpm": 1, "tpm": 1_000_000}}),
        ENABLE_LLM_CACHING="false",
    )
    try:
        yield s
    finally:
        s.stop()


def redis_proc(stack: Stack) -> Proc:
    return next(p for p in stack.group.procs if p.name.startswith("redis-"))


def chat(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello"}], "provider": "openai", **extra}


def test_refusals_and_deadlines_do_not_wait_for_redis(quota_stack: Stack) -> None:
    upstream = Upstream(quota_stack)
    upstream.reset()
    redis = redis_proc(quota_stack)
    with quota_stack.client(sub="bob") as bob, quota_stack.client(sub="alice") as alice:
        assert bob.post(COMPLETIONS, json=chat()).status_code == 200
        refused = bob.post(COMPLETIONS, json=chat())  # through Redis: the quota's one request is spent
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "rate_limit_error"

        redis.kill(signal.SIGSTOP)
        try:
            for _ in range(5):
                started = time.monotonic()
                again = bob.post(COMPLETIONS, json=chat())
                assert again.status_code == 429, again.text
                assert time.monotonic() - started < 0.2  # milliseconds, whatever Redis is doing
                assert int(again.headers["Retry-After"]) >= 1
                assert again.json()["error"]["message"] == refused.json()["error"]["message"]

            # a synchronous request whose admission cannot get through gets its 504 at its deadline
            started = time.monotonic()
            late = alice.post(COMPLETIONS, json=chat(timeout=1))
            elapsed = time.monotonic() - started
        finally:
            redis.kill(signal.SIGCONT)
        assert late.status_code == 504, late.text
        assert 0.9 <= elapsed < 1.6, elapsed
        rid = late.json()["error"]["jobId"]

        # its admission reached Redis once Redis was back: the job carries the passed deadline, so it
        # ends with a timeout and no provider is called for it
        view = alice.get(f"{JOBS}/{rid}", params={"wait": 10}).json()["data"]
        assert view["status"] == "failed" and view["error"]["type"] == "timeout_error", view
        assert upstream.requests("openai", rid) == []
