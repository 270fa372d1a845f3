"""Fencing: a worker paused (SIGSTOP) mid-call past its lease, whose job another worker retook, must not
store its outcome over the retaking worker's, nor call the provider again when it wakes.

Two OpenAI workers; the simulator holds the first call (a `hang` fault) while its worker is paused,
so the lease lapses and the other worker retakes the job. The simulator's recorded requests per
request id count the upstream calls: the paused worker's call was sent before it paused (the one
duplicate leases cannot avoid, see the README's upstream semantics), and no third one may follow.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devstack.procs import Proc, wait_until
from devstack.stack import Stack
from shared import keys
from tests.integration.conftest import Upstream, start_stack

JOBS = "/api/v1/llm/jobs"
READ_TIMEOUT_S = 4  # longer than the paused call's hang (test 1), shorter than the test's bound


@pytest.fixture(scope="module")
def fencing_stack() -> Iterator[Stack]:
    """Two OpenAI workers, the quiet stacks' 1.5 s lease, no failover, no cache."""
    s = start_stack(
        {"openai": [{}, {}], "anthropic": [{}]},
        ENABLE_LLM_FAILOVER="false",
        ENABLE_LLM_CACHING="false",
        PROVIDER_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def r(fencing_stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(fencing_stack.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def upstream(fencing_stack: Stack) -> Iterator[Upstream]:
    up = Upstream(fencing_stack)
    up.reset()
    yield up
    up.reset()


def fenced(r: redis.Redis) -> int:
    return int(r.hget(keys.metrics_totals(), "x|openai") or 0)  # type: ignore[arg-type]


def record(r: redis.Redis, rid: str) -> dict[str, Any]:
    return r.hgetall(keys.request(rid))  # type: ignore[return-value]


def submit(stack: Stack) -> str:
    with stack.client() as api:
        resp = api.post(JOBS, json={"messages": [{"role": "user", "content": "Hello"}], "provider": "openai"})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["data"]["id"])


@contextlib.contextmanager
def paused_holder(stack: Stack, r: redis.Redis, upstream: Upstream) -> Iterator[tuple[str, str]]:
    """Submit a job and SIGSTOP the worker running it once its call is held upstream; SIGCONT it on
    leaving. Yields the request id and the paused worker's id."""
    rid = submit(stack)
    wait_until(lambda: record(r, rid).get("status") == "running", 10, "the job running")
    worker = record(r, rid)["worker"]
    paused: Proc = next(p for p in stack.workers["openai"] if f":{p.popen.pid}:" in worker)
    upstream.wait_in_flight("openai", 1)
    paused.kill(signal.SIGSTOP)
    try:
        yield rid, worker
    finally:
        paused.kill(signal.SIGCONT)


def answer(stack: Stack, rid: str) -> dict[str, Any]:
    with stack.client() as api:
        view = api.get(f"{JOBS}/{rid}", params={"wait": 20}).json()["data"]
    assert view["status"] in ("succeeded", "failed"), view
    return dict(view)


def test_a_paused_workers_late_answer_does_not_overwrite_the_retaking_workers(
    fencing_stack: Stack, r: redis.Redis, upstream: Upstream
) -> None:
    """The paused worker's call comes back while the retaking worker's call is still under way: it
    would store its outcome first, unfenced. Fenced, it stores nothing; the retaking worker's stands."""
    upstream.fault("openai", mode="hang", seconds=1, count=1)  # the first call: held 1 s
    upstream.fault("openai", mode="hang", count=1)  # the retaking worker's: held until released
    before = fenced(r)
    with paused_holder(fencing_stack, r, upstream) as (rid, paused_id):
        # the lease lapses, the other worker retakes the job and calls the provider again
        wait_until(lambda: record(r, rid).get("worker") not in (None, paused_id), 15, "the job retaken")
        wait_until(lambda: len(upstream.requests("openai", rid)) == 2, 15, "the retaking worker's call")
    retaker = record(r, rid)["worker"]
    # the paused worker's call ends (its hang was 1 s): its outcome is refused, counted as fenced
    wait_until(lambda: fenced(r) > before, 15, "the woken worker fenced")
    assert record(r, rid)["status"] == "running"  # nothing stored: the retaking worker's call runs on
    upstream.release()

    view = answer(fencing_stack, rid)
    assert view["status"] == "succeeded", view
    assert record(r, rid)["worker"] == retaker
    assert len(upstream.requests("openai", rid)) == 2  # the paused call and the retaking worker's
    assert answer(fencing_stack, rid) == view  # one answer, the same on every read


def test_a_paused_worker_calls_the_provider_no_more_once_its_job_was_retaken(
    fencing_stack: Stack, r: redis.Redis, upstream: Upstream
) -> None:
    """The paused worker's call fails (its read times out) after the other worker finished the job:
    unfenced, it would retry, a third call upstream. It checks its lease first and gives the job up."""
    upstream.fault("openai", mode="hang", count=1)  # the first call: held until released
    before = fenced(r)
    with paused_holder(fencing_stack, r, upstream) as (rid, paused_id):
        wait_until(lambda: record(r, rid).get("status") == "succeeded", 15, "the job finished elsewhere")
    stored = record(r, rid)
    assert stored["worker"] != paused_id
    # the held call times out in the woken worker (READ_TIMEOUT_S), which would retry it
    wait_until(lambda: fenced(r) > before, 3 * READ_TIMEOUT_S, "the woken worker fenced")

    assert len(upstream.requests("openai", rid)) == 2
    assert record(r, rid)["result"] == stored["result"]
    assert answer(fencing_stack, rid)["status"] == "succeeded"
