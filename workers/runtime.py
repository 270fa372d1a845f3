"""Assembles one provider's worker: Redis connection, provider client, processor, the worker's loop."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from plumbing.coalescer import Coalescer
from plumbing.redis_connection import connect
from plumbing.redis_lane import RedisLane
from shared.batches import BatchStore
from shared.health import ProviderStatusView
from shared.pricing import PriceBook
from shared.queue import RequestQueue
from shared.routing import PROVIDERS
from shared.settings import JobKinds, Settings
from workers.batch_feeder import BATCH_ONLY_QUEUEING, SHARED_QUEUEING, BatchFeeder
from workers.breaker_guard import BreakerGuard
from workers.guard import CallGuard, ChainGuard
from workers.health_monitor import HealthMonitor
from workers.limits_guard import LimitsGuard, TenantReconciler
from workers.log_keeper import LogKeeper
from workers.metrics_observer import close_observers, default_observers
from workers.observer import Observers
from workers.processor import Processor
from workers.provider_client import ProviderClient
from workers.worker import GatewayWorker


def worker_id(provider: str) -> str:
    return f"{provider}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_worker(
    provider: str,
    settings: Settings,
    *,
    handle_signals: bool = True,
    guard: CallGuard | None = None,
    observers: Observers | None = None,
    kinds: JobKinds | None = None,
    **overrides: Any,
) -> GatewayWorker:
    """Build (not start) a worker taking `kinds` of jobs (default: WORKER_JOB_KINDS). Call inside the
    event loop that will run it."""
    redis = connect(settings.redis_address(), socket_timeout=None)
    client = ProviderClient(provider, settings)
    # what this process knows of every provider's breaker and health, kept current by pub/sub
    provider_view = ProviderStatusView(redis, settings, PROVIDERS)
    breaker_guard = BreakerGuard(redis, settings, provider_view)
    wid = worker_id(provider)
    # one coalescer per process: limits draws, outcomes and bookkeeping ready together share a round
    # trip, on a connection of its own, pipelined (outcomes are the hot path's last step)
    lane = RedisLane(redis)
    trips = Coalescer(redis, lane)
    limits_guard = LimitsGuard(redis, settings, gate_id=wid, trips=trips)
    processor = Processor(
        provider=provider,
        settings=settings,
        queue=RequestQueue.from_settings(redis, settings),
        client=client,
        guard=guard or ChainGuard(redis, breaker_guard, limits_guard),
        prices=PriceBook(settings.price_overrides),
        worker_id=wid,
        observers=observers if observers is not None else default_observers(redis, settings),
        trips=trips,
    )
    # the API reserved each tenant's tokens at admission; the real usage settles them
    processor.observers.observers.append(TenantReconciler(redis, settings))

    # every worker runs a health monitor; only the holder of its Redis lease works
    monitor = HealthMonitor(redis, settings, processor.worker_id) if settings.health_monitor_enabled else None
    # and a log keeper: the lease's holder bounds the Redis log stream and feeds the log store
    log_keeper = LogKeeper.from_settings(redis, settings, processor.worker_id)

    async def on_startup() -> None:
        provider_view.start()
        if monitor is not None:
            monitor.start()
        log_keeper.start()

    async def on_shutdown() -> None:
        await log_keeper.stop()
        if monitor is not None:
            await monitor.stop()
        await provider_view.stop()
        await client.aclose()
        await close_observers(processor.observers)
        await lane.aclose()

    options: dict[str, Any] = {
        "max_jobs": settings.worker_max_jobs,
        "poll_delay_s": settings.worker_poll_fallback_s,
        # the processor bounds its own calls; a job's timeout is only a last resort
        "job_timeout_s": settings.max_request_timeout_s * (settings.retry_max_attempts + 1),
        "stop_grace_s": settings.worker_stop_grace_s,
        "handle_signals": handle_signals,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        **overrides,
    }
    kinds = kinds or settings.worker_job_kinds
    feeder = None
    if kinds != "interactive":
        # every worker taking batch jobs feeds batch items into this provider's queue (one atomic
        # script, no leader)
        feeder = BatchFeeder(
            BatchStore(redis, PROVIDERS, result_ttl_s=settings.result_ttl_s),
            redis,
            provider,
            slots_per_worker=int(options["max_jobs"]),
            share=settings.batch_slot_share,
            max_move=settings.batch_feed_chunk,
            tick_s=settings.worker_poll_fallback_s,
            queueing=BATCH_ONLY_QUEUEING if kinds == "batch" else SHARED_QUEUEING,
        )
        processor.observers.observers.append(feeder)
    return GatewayWorker(
        provider=provider,
        processor=processor,
        lease_s=settings.worker_lease_s,
        take_s=settings.worker_handover_take_s,
        redis=redis,
        feeder=feeder,
        kinds=kinds,
        **options,
    )
