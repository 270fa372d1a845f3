"""Requests the API refuses itself (a 429 at admission, a 4xx for a body or a token), counted.

A refusal never reaches a worker, so the workers' counters (shared/metrics.py) never see it. Each one
costs the refusing request a dict increment here, nothing more: a background task of the process
sends the sums every `FLUSH_INTERVAL_S` in one counters script call (`shared.metrics.record_refusals`),
into the same minute and hour buckets as every other counter, so the console and
`/api/v1/llm/console/series` read them like any other figure. Counts a failed send could not deliver
are added back and sent with the next ones; the last sums are sent when the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.metrics import record_refusals

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S: Final = 1.0
# A flood of refusals from many tenants is summed per (tenant, type): past this many distinct keys
# between two sends, further tenants' refusals are counted for the gateway only.
MAX_KEYS: Final = 10_000


class RefusalCounter:
    """One per API process (`app.state.refusals`)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._counts: Counter[tuple[str | None, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def count(self, error_type: str, tenant: str | None = None) -> None:
        """One refused request of `error_type`, of `tenant` when the caller is known."""
        if not self.enabled:
            return
        key = (tenant, error_type)
        if tenant is not None and key not in self._counts and len(self._counts) >= MAX_KEYS:
            key = (None, error_type)
        self._counts[key] += 1

    def pending(self) -> dict[tuple[str | None, str], int]:
        return dict(self._counts)

    async def flush(self, redis: Redis) -> None:
        if not self._counts:
            return
        sums, self._counts = self._counts, Counter()
        try:
            await record_refusals(redis, sums, time.time())
        except (RedisError, OSError):
            self._counts.update(sums)  # sent with the next ones
            raise

    def start(self, redis: Redis) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(redis), name="refusal-counter")

    async def stop(self, redis: Redis) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self.flush(redis)

    async def _run(self, redis: Redis) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush(redis)
            except (RedisError, OSError) as exc:
                log.warning("refusal counts not sent (%s); kept for the next send", type(exc).__name__)
