"""The batch feeder every worker runs: tops its provider's arq queue up with batch items, fairly.

No lease and no leader: the feed is one atomic script that reads the shared in-flight counter, so
any number of feeders can run it at once and the bound still holds. A feeder runs the script when
a batch job of its own worker ends (a slot is free somewhere), when a batch is submitted (pub/sub),
and on a fallback tick, which also expires batches past their window and resumes interrupted
cancels.

The bound: batch jobs queued or running per provider <= `batch_slot_share` x the slots of the
provider's live workers. Below 1 it keeps slots free for synchronous requests even when every
batch job is slow; sync and async jobs are never bounded and sort ahead of batch jobs in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.batches import BatchStore
from workers.observer import Finished

log = logging.getLogger(__name__)


class BatchFeeder:
    def __init__(
        self,
        store: BatchStore,
        redis: Redis,
        provider: str,
        *,
        slots_per_worker: int,
        share: float,
        max_move: int,
        tick_s: float,
    ) -> None:
        self.store = store
        self.redis = redis
        self.provider = provider
        self.slots_per_worker = slots_per_worker
        self.share = share
        self.max_move = max_move
        self.tick_s = tick_s
        self._poke = asyncio.Event()
        self._live_workers = 1
        self._live_checked = 0.0
        self.moved = 0

    def poke(self) -> None:
        self._poke.set()

    async def on_finished(self, event: Finished) -> None:
        """RequestObserver: a batch job of this worker ended, so a batch slot is free."""
        if event.payload.kind == "batch":
            self._poke.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="batch-feed-subscriber")
        try:
            await self._loop()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _loop(self) -> None:
        next_tick = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), max(0.0, next_tick - time.monotonic()))
            self._poke.clear()
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_s
                    await self._housekeeping()
                moved = await self.store.feed(self.provider, cap=await self.cap(), max_move=self.max_move)
            except (RedisError, OSError) as exc:
                log.warning("batch feed failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            self.moved += moved
            if moved >= self.max_move:
                self._poke.set()  # the bound may allow more

    async def cap(self) -> int:
        """The provider's bound on batch jobs queued or running, from its live workers' slots."""
        now = time.monotonic()
        if now - self._live_checked > self.tick_s:
            self._live_checked = now
            self._live_workers = max(1, int(await self.redis.zcard(keys.worker_heartbeat(self.provider))))
        return max(1, math.ceil(self.share * self.slots_per_worker * self._live_workers))

    async def _housekeeping(self) -> None:
        """Expire batches past their window; finish cancels or expiries a crash interrupted."""
        for batch_id in await self.store.due_for_expiry():
            await self.store.drain_all(batch_id, "expired")
        for batch_id in await self.store.ending():
            await self.store.drain_all(batch_id, await self.store.end_reason(batch_id))

    async def _listen(self) -> None:
        channel = keys.feed_channel(self.provider)
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._poke.set()  # anything submitted while we were not listening
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._poke.set()
            except (RedisError, OSError) as exc:
                log.warning("batch feed subscriber lost Redis (%s); reconnecting", type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)
