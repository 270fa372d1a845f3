"""Assembles one provider's worker: Redis pool, provider client, processor, arq worker."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from arq.connections import ArqRedis

from shared.pricing import PriceBook
from shared.queue import RequestQueue
from shared.redis_conn import connect
from shared.settings import Settings
from workers.guard import CallGuard, OpenGuard
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
    **overrides: Any,
) -> GatewayWorker:
    """Build (not start) a worker. Call inside the event loop that will run it."""
    redis = connect(settings.redis_url, cls=ArqRedis, socket_timeout=None)
    client = ProviderClient(provider, settings)
    processor = Processor(
        provider=provider,
        settings=settings,
        queue=RequestQueue(redis, result_ttl_s=settings.result_ttl_s),
        client=client,
        guard=guard or OpenGuard(),
        prices=PriceBook(settings.price_overrides),
        worker_id=worker_id(provider),
        observers=observers,
    )

    async def on_shutdown(_: dict[str, Any]) -> None:
        await client.aclose()

    options: dict[str, Any] = {
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_fallback_s,
        # the processor bounds its own calls; arq's timeout is only a last resort
        "job_timeout": settings.max_request_timeout_s * (settings.retry_max_attempts + 1),
        "handle_signals": handle_signals,
        "on_shutdown": on_shutdown,
        **overrides,
    }
    return GatewayWorker(
        provider=provider,
        processor=processor,
        lease_s=settings.worker_lease_s,
        redis_pool=redis,
        **options,
    )
