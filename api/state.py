"""What one API process holds for its lifetime: settings, the Redis pool, the queue, the waiter, the cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from redis.asyncio import Redis

from api.response_cache import ResponseCache
from api.stream_hub import StreamHub
from shared.queue import RequestQueue
from shared.settings import Settings
from shared.streams import Streams
from shared.waiter import Waiter


@dataclass
class AppState:
    settings: Settings
    redis: Redis
    queue: RequestQueue
    waiter: Waiter
    cache: ResponseCache
    hub: StreamHub
    streams: Streams
    started: float = field(default_factory=time.time)


async def get_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs plain `def` dependencies in a thread pool."""
    state: AppState = request.app.state.gateway
    return state
