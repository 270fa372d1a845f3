"""The worker's own loop stops gracefully: no more jobs, running ones end within the stop grace, the
rest go back to the queue; closing never cancels a job's last step.

Under arq's loop, `close()` called `handle_sig` again, which cancelled the protected `finish_job` of a
job still running: the CancelledError escaped `Gateway.close` (the programmatic client's in-process
workers) and the job's outcome could be lost with its lease still held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from llm_gateway.gateway import Gateway
from shared import keys
from shared.queue import Claimed, RequestQueue
from shared.schemas import JobPayload, ProviderCall, ProviderResult, Usage
from shared.settings import Settings
from workers.runtime import build_worker
from workers.worker import GatewayWorker


def payload(n: int) -> JobPayload:
    return JobPayload(
        request_id=f"req{n:029d}",
        provider="openai",
        call=ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=10),
        tenant="alice",
        kind="sync",
    )


class Call:
    """A provider call that starts, and ends only when the test lets it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, call: ProviderCall) -> ProviderResult:
        self.started.set()
        await self.release.wait()
        return ProviderResult("hello", "stop", Usage(prompt_tokens=3, completion_tokens=2), call.model)


def settings(redis_url: str, grace_s: float) -> Settings:
    return Settings(
        redis_url=redis_url,
        openai_api_key=SecretStr("sk-test"),
        health_monitor_enabled=False,
        worker_stop_grace_s=grace_s,
    )


@pytest.fixture
async def gateway_with(redis_url: str) -> AsyncIterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for gateway in made:
        await gateway.close()


async def started_gateway(made: list[Gateway], s: Settings, call: Call) -> tuple[Gateway, GatewayWorker]:
    gateway = Gateway(s, ["openai"], run_workers=True)
    made.append(gateway)
    await gateway.initialize()
    (worker,) = gateway._workers
    worker.processor.client.complete = call.complete  # type: ignore[method-assign]
    return gateway, worker


async def test_closing_with_a_job_mid_call_stores_its_outcome_and_raises_nothing(
    r: Redis, redis_url: str, gateway_with: list[Gateway]
) -> None:
    call = Call()
    gateway, worker = await started_gateway(gateway_with, settings(redis_url, grace_s=30), call)
    queue = RequestQueue(r)
    assert await queue.enqueue(payload(1))
    async with asyncio.timeout(10):
        await call.started.wait()

    closing = asyncio.create_task(gateway.close())
    await asyncio.sleep(0)  # one turn: close() has told the worker to stop
    assert worker._stopping
    call.release.set()  # the call ends within the grace
    async with asyncio.timeout(10):
        await closing  # raises nothing

    record = await queue.record(payload(1).request_id)
    assert record["status"] == "succeeded"
    job_id = keys.job_id(payload(1).request_id, 0)
    assert not await r.exists(keys.arq_job(job_id), keys.arq_in_progress(job_id))
    assert await r.zscore(keys.queue("openai"), job_id) is None
    assert not await r.hexists(keys.worker_room("openai"), worker.processor.worker_id)  # type: ignore[misc]


async def test_a_job_still_running_after_the_grace_goes_back_to_the_queue(
    r: Redis, redis_url: str, gateway_with: list[Gateway]
) -> None:
    call = Call()  # never released
    gateway, worker = await started_gateway(gateway_with, settings(redis_url, grace_s=0.2), call)
    queue = RequestQueue(r)
    assert await queue.enqueue(payload(1))
    job_id = keys.job_id(payload(1).request_id, 0)
    score = await r.zscore(keys.queue("openai"), job_id)
    async with asyncio.timeout(10):
        await call.started.wait()
        await gateway.close()  # raises nothing

    assert (await queue.record(payload(1).request_id))["status"] in ("queued", "running")  # not ended
    assert await r.zscore(keys.queue("openai"), job_id) == score  # due again, in its old place
    assert not await r.exists(keys.arq_in_progress(job_id))  # no lease to wait for
    assert await r.exists(keys.arq_job(job_id))
    assert not worker.jobs


async def test_a_second_signal_hands_running_jobs_back_at_once(r: Redis, redis_url: str) -> None:
    call = Call()
    worker = build_worker("openai", settings(redis_url, grace_s=600), handle_signals=False)
    worker.processor.client.complete = call.complete  # type: ignore[method-assign]
    running = asyncio.create_task(worker.async_run())
    try:
        assert await RequestQueue(r).enqueue(payload(1))
        async with asyncio.timeout(10):
            await call.started.wait()
            worker.handle_sig(15)  # graceful: the call may take its time...
            worker.handle_sig(15)  # ...but not after a second signal
            await running
        job_id = keys.job_id(payload(1).request_id, 0)
        assert await r.zscore(keys.queue("openai"), job_id) is not None
        assert not await r.exists(keys.arq_in_progress(job_id))
    finally:
        running.cancel()
        await worker.close()


async def test_a_stopping_worker_takes_no_new_job(r: Redis, redis_url: str) -> None:
    worker = build_worker("openai", settings(redis_url, grace_s=5), handle_signals=False)
    worker.stop()
    await worker._poll_iteration()  # a poll that a doorbell started just before the stop
    assert await RequestQueue(r).enqueue(payload(1))
    await worker._poll_iteration()
    assert not worker.jobs
    await worker.close()
    job_id = keys.job_id(payload(1).request_id, 0)
    assert not await r.exists(keys.arq_in_progress(job_id))


async def test_a_job_whose_request_ended_is_retired_by_the_loop_with_its_slot(r: Redis, redis_url: str) -> None:
    """The claim's verdict travels with the job: a `stale` job runs no call, and, ending without an
    outcome of its own, is retired by the worker loop (arq's keys, the queue entry, its slot)."""
    call = Call()
    worker = build_worker("openai", settings(redis_url, grace_s=5), handle_signals=False)
    worker.processor.client.complete = call.complete  # type: ignore[method-assign]
    wid = worker.processor.worker_id
    assert await RequestQueue(r).enqueue(payload(1))
    job_id = keys.job_id(payload(1).request_id, 0)
    score = await r.zscore(keys.queue("openai"), job_id)
    body = await r.get(keys.arq_job(job_id))
    assert score is not None and body is not None
    await r.hset(keys.worker_room("openai"), wid, "3")  # type: ignore[misc]
    # stale: its request moved on to another hop (a job of the current hop is never retired unrun)
    await r.hset(keys.request(payload(1).request_id), "job", keys.job_id(payload(1).request_id, 1))  # type: ignore[misc]

    await worker._run(Claimed(job_id, int(score), "stale", body, 1))

    assert not call.started.is_set()
    assert not await r.exists(keys.arq_job(job_id))
    assert await r.zscore(keys.queue("openai"), job_id) is None
    assert await r.hget(keys.worker_room("openai"), wid) == b"4"  # type: ignore[misc]
    await r.hdel(keys.worker_room("openai"), wid)  # type: ignore[misc]
    await worker.close()


async def test_a_worker_cancelled_from_outside_hands_its_running_jobs_back(r: Redis, redis_url: str) -> None:
    call = Call()  # never released
    worker = build_worker("openai", settings(redis_url, grace_s=600), handle_signals=False)
    worker.processor.client.complete = call.complete  # type: ignore[method-assign]
    running = asyncio.create_task(worker.async_run())
    try:
        assert await RequestQueue(r).enqueue(payload(1))
        async with asyncio.timeout(10):
            await call.started.wait()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        job_id = keys.job_id(payload(1).request_id, 0)
        assert await r.zscore(keys.queue("openai"), job_id) is not None
        assert not await r.exists(keys.arq_in_progress(job_id))
        assert not worker.jobs
    finally:
        await worker.close()
