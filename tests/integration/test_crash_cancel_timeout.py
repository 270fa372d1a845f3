"""Requests outliving their circumstances: a worker SIGKILLed mid-call, a cancelled job, a caller that
stops waiting. The provider is held with `hang` faults so each situation is set up, not raced."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from devstack.procs import Proc, wait_until
from devstack.stack import Stack
from shared import keys

COMPLETIONS = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"


def chat(provider: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello"}], "provider": provider, **extra}


def wait_running(r: Any, request_id: str) -> dict[str, str]:
    """Wait until a worker has claimed the request; its record then names that worker."""
    wait_until(lambda: r.hget(keys.request(request_id), "status") == "running", 15, f"{request_id} running")
    record: dict[str, str] = r.hgetall(keys.request(request_id))
    return record


def pid_of(worker_id: str) -> int:
    """Worker ids are `<provider>:<host>:<pid>:<nonce>`."""
    return int(worker_id.rsplit(":", 2)[1])


def replace_worker(stack: Stack, dead: Proc, r: Any) -> None:
    """Start a worker in place of a killed one, so the stack is whole again for later tests."""
    stack.workers["openai"].remove(dead)
    fresh = stack.start_worker("openai")
    marker = f":{fresh.popen.pid}:"
    wait_until(
        lambda: any(marker in m for m in r.zrange(keys.worker_heartbeat("openai"), 0, -1)),
        20,
        "replacement worker",
        fresh.popen,
    )


def test_sigkilled_worker_job_completes_on_another_worker(
    tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any
) -> None:
    r = redis_of(tuned_stack)
    tuned.fault("openai", mode="hang", count=1, seconds=60)  # only the first call is held
    job = tuned_api.post(JOBS, json=chat("openai")).json()["data"]
    first = wait_running(r, job["id"])
    tuned.wait_in_flight("openai")

    victim = next(p for p in tuned_stack.workers["openai"] if p.popen.pid == pid_of(first["worker"]))
    victim.kill(signal.SIGKILL)
    victim.popen.wait(10)
    try:
        # the other worker retakes the job once the dead worker's lease (WORKER_LEASE_S) lapses
        view = tuned_api.get(job["statusUrl"], params={"wait": 30}).json()["data"]
        assert view["status"] == "succeeded", view
        assert view["result"]["content"].startswith("Simulated openai reply to: Hello")
        last = r.hgetall(keys.request(job["id"]))
        assert pid_of(last["worker"]) != victim.popen.pid
        assert len(tuned.requests("openai", job["id"])) == 2  # the held call, then the retaken one
    finally:
        replace_worker(tuned_stack, victim, r)


def test_sigtermed_worker_ends_its_running_call_then_exits(
    tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any
) -> None:
    """SIGTERM: the worker leaves the room and takes no more jobs, lets its running call end within
    WORKER_STOP_GRACE_S, stores its outcome and exits (arq's loop cancelled the call and ran it again)."""
    r = redis_of(tuned_stack)
    tuned.fault("openai", mode="hang", count=1, seconds=60)
    job = tuned_api.post(JOBS, json=chat("openai")).json()["data"]
    first = wait_running(r, job["id"])
    tuned.wait_in_flight("openai")

    victim = next(p for p in tuned_stack.workers["openai"] if p.popen.pid == pid_of(first["worker"]))
    victim.popen.send_signal(signal.SIGTERM)
    try:
        room = keys.worker_room("openai")
        wait_until(lambda: not r.hexists(room, first["worker"]), 10, "the stopping worker out of the room")
        assert victim.alive()  # its call is still under way, within the grace
        tuned.release()
        assert victim.popen.wait(10) == 0
        view = tuned_api.get(job["statusUrl"], params={"wait": 10}).json()["data"]
        assert view["status"] == "succeeded", view
        assert r.hget(keys.request(job["id"]), "worker") == first["worker"]
        assert len(tuned.requests("openai", job["id"])) == 1  # one call: not cancelled and run again
    finally:
        replace_worker(tuned_stack, victim, r)


def test_cancel_a_job_that_has_not_started(
    tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack, redis_of: Any
) -> None:
    r = redis_of(tuned_stack)
    tuned.fault("anthropic", mode="hang", count=1)
    # the only Anthropic worker has one slot: the first job holds it, the second waits in the queue
    running = tuned_api.post(JOBS, json=chat("anthropic")).json()["data"]
    wait_running(r, running["id"])
    waiting = tuned_api.post(JOBS, json=chat("anthropic")).json()["data"]
    assert tuned_api.get(waiting["statusUrl"]).json()["data"]["status"] == "queued"

    with tuned_stack.client() as poller, ThreadPoolExecutor(1) as pool:
        long_poll = pool.submit(poller.get, waiting["statusUrl"], params={"wait": 300})
        wait_until(lambda: r.scard(keys.watchers(waiting["id"])) > 0, 10, "long-poll registered")
        cancelled = tuned_api.delete(waiting["statusUrl"])
        polled = long_poll.result().json()["data"]

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"success": True, "data": {"id": waiting["id"], "status": "cancelled"}}
    assert polled["status"] == "cancelled"  # a long-poll on the job ends with it
    assert polled["error"]["type"] == "cancelled_error"
    view = tuned_api.get(waiting["statusUrl"]).json()["data"]
    assert view["status"] == "cancelled" and view["result"] is None

    # a started job cannot be cancelled; cancelling a cancelled job again changes nothing
    refused = tuned_api.delete(running["statusUrl"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["type"] == "cancelled_error"
    again = tuned_api.delete(waiting["statusUrl"])
    assert again.status_code == 200 and again.json()["data"]["status"] == "cancelled"
    assert tuned_api.delete(f"{JOBS}/{'0' * 32}").status_code == 404

    tuned.release()
    done = tuned_api.get(running["statusUrl"], params={"wait": 20}).json()["data"]
    assert done["status"] == "succeeded"
    # the cancelled job left the queue and never reached the provider
    assert r.zcard(keys.queue("anthropic")) == 0
    assert tuned.requests("anthropic", waiting["id"]) == []
    assert len(tuned.requests("anthropic")) == 1


def test_sync_timeout_stops_the_request_at_its_deadline(api: httpx.Client, upstream: Any) -> None:
    upstream.fault("openai", mode="hang", count=1)
    resp = api.post(COMPLETIONS, json=chat("openai", timeout=1))

    assert resp.status_code == 504, resp.text
    err = resp.json()["error"]
    assert err["type"] == "timeout_error"
    assert err["retryable"] is True
    job_url = f"{JOBS}/{err['jobId']}"
    assert err["statusUrl"] == job_url
    assert "deadline" in err["message"]

    # the call under way was cut at the deadline: the record says so (tests/integration/test_deadlines.py)
    view = api.get(job_url, params={"wait": 20}).json()["data"]
    assert view["status"] == "failed"
    assert view["error"]["type"] == "timeout_error"
