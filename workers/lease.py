"""A Redis lease for work that every worker process can do but only one may do at a time (the health
monitor, the log keeper): each process runs one; the holder renews it, the others take it over when it
lapses (its holder died or lost Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import scripts

log = logging.getLogger(__name__)


class Lease:
    """`holding` is set while this process holds the lease at `key`; `keep()` renews it every third of
    its time to live."""

    def __init__(self, redis: Redis, key: str, holder: str, ttl_s: float, what: str) -> None:
        self.key = key
        self.holder = holder
        self.token = f"{holder}|{uuid.uuid4().hex[:8]}"
        self.ttl_s = ttl_s
        self.what = what
        self.holding = asyncio.Event()
        self._hold = redis.register_script(scripts.LEASE_HOLD.source)
        self._release = redis.register_script(scripts.LEASE_RELEASE.source)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, work: Callable[[], Awaitable[object]], interval_s: float, name: str) -> None:
        """Keep the lease and, while holding it, run `work` every `interval_s` (tasks named `name-*`)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.keep(), name=f"{name}-lease"),
                asyncio.create_task(self.run_while_holding(work, interval_s), name=f"{name}-work"),
            ]

    async def stop(self) -> None:
        """Stop both tasks and give the lease up, so another process takes it at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.release()

    async def keep(self) -> None:
        ttl_ms = int(self.ttl_s * 1000)
        while True:
            try:
                held = bool(await self._hold(*scripts.lease_hold(lease=self.key, token=self.token, ttl_ms=ttl_ms)))
            except (RedisError, OSError) as exc:
                log.warning("%s lease check failed (%s)", self.what, type(exc).__name__)
                held = False  # it may lapse while we cannot renew it: assume it has
            if held and not self.holding.is_set():
                log.info("%s: %s took the lease", self.what, self.holder)
                self.holding.set()
            elif not held and self.holding.is_set():
                log.info("%s: %s lost the lease", self.what, self.holder)
                self.holding.clear()
            await asyncio.sleep(self.ttl_s / 3)

    async def release(self) -> None:
        if self.holding.is_set():
            self.holding.clear()
            with contextlib.suppress(RedisError, OSError):
                await self._release(*scripts.lease_release(lease=self.key, token=self.token))

    async def run_while_holding(self, work: Callable[[], Awaitable[object]], interval_s: float) -> None:
        """Run `work` every `interval_s` while this process holds the lease; a failed run is logged, and
        the next one is tried at its time."""
        while True:
            await self.holding.wait()
            started = time.monotonic()
            try:
                await work()
            except (RedisError, OSError) as exc:
                log.warning("%s cycle failed (%s)", self.what, type(exc).__name__)
            except Exception:
                log.exception("%s cycle failed", self.what)
            await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0.0))
