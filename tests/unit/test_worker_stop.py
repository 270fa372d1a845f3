"""A worker stops when told to, even when a doorbell rings in the same turn of the event loop.

arq stopped a worker by cancelling its main task (the worker's own loop now stops on a flag and its
doorbell, and still cancels its background tasks: the feeder test below). On Python 3.11 `asyncio.wait_for` loses a
cancellation that arrives once the awaited thing has completed (it returns the result instead:
CPython gh-86296, fixed in 3.12 only). A worker sleeping in `wait_for(wake.wait(), ...)` whose
doorbell rang in the turn it was stopped went round its loop again and never ended, and
`Gateway.close()` (in-process workers) waited for it forever: the hang of
test_programmatic::test_complete_with_in_process_workers, where the in-process workers' first
subscriptions rang their doorbells just as the request, served by another worker, came back.
Each test below makes that interleaving happen every time.
"""

from __future__ import annotations

import asyncio
import signal

from redis.asyncio import Redis

from shared.settings import Settings
from shared.signals import wait_for_bell
from workers.runtime import build_worker
from workers.worker import GatewayWorker


async def _parked(bell: asyncio.Event) -> None:
    """Until a task sleeps on `bell` (the loop under test is between two rounds)."""
    async with asyncio.timeout(5):
        while not bell._waiters:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)


async def _ended(task: asyncio.Task[None]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=5)
    return task in done


def _worker(redis_url: str) -> GatewayWorker:
    # no poll comes round by itself during the test: only the doorbell wakes the loop
    settings = Settings(redis_url=redis_url, worker_poll_fallback_s=60, health_monitor_enabled=False)
    return build_worker("openai", settings, handle_signals=False)


async def test_a_bell_ringing_as_the_waiter_is_cancelled_does_not_eat_the_cancellation() -> None:
    bell = asyncio.Event()
    waiting = asyncio.create_task(wait_for_bell(bell, 60))
    await _parked(bell)
    bell.set()
    waiting.cancel()
    assert await _ended(waiting)
    assert waiting.cancelled()


async def test_a_worker_stopped_as_its_doorbell_rings_stops(r: Redis, redis_url: str) -> None:
    # `r`: an empty database, so the worker finds no job left by another test
    worker = _worker(redis_url)
    running = asyncio.create_task(worker.async_run())
    try:
        await _parked(worker._wake)
        worker._wake.set()  # an enqueue's wake-up, or the worker's own subscription confirmed...
        worker.handle_sig(signal.SIGTERM)  # ...in the turn the worker is told to stop
        assert await _ended(running), "the worker's main loop went on after its stop"
    finally:
        await worker.close()  # cancels the main task again (the test's clean-up, not the fix)
        running.cancel()


async def test_a_batch_feeder_cancelled_as_it_is_poked_stops(r: Redis, redis_url: str) -> None:
    worker = _worker(redis_url)
    assert worker.feeder is not None
    feeding = asyncio.create_task(worker.feeder.run())
    try:
        await _parked(worker.feeder._poke)
        worker.feeder.poke()  # a batch job ended...
        feeding.cancel()  # ...in the turn the worker stopped (its main loop cancels the feeder)
        assert await _ended(feeding), "the batch feeder went on after it was cancelled"
        assert feeding.cancelled()
    finally:
        feeding.cancel()
        await worker.close()
