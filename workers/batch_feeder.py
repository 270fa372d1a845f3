"""The batch feeder every worker runs: tops its provider's arq queue up with batch items, fairly.

No lease and no leader: the feed is one atomic script that reads the shared in-flight counter, so
any number of feeders can run it at once and the bound still holds. A feeder runs the script when
batch jobs of its own worker end (a slot is free), when a batch is submitted (pub/sub), and on a
fallback tick, which also expires batches past their window and resumes interrupted cancels.

The bound (batch jobs queued or running per provider) is not a fixed number. A fixed one is wrong
one way or the other: with a provider that answers in seconds, hundreds of calls in flight cost
nothing and are needed for throughput; with one that answers at once, the same hundreds are CPU
work queued in the worker's event loop and its admission gate, ahead of every synchronous request
claimed after them. So each worker sizes its share like TCP Vegas sizes a congestion window: from
the batch calls it ends, it compares the shortest recent call time with the current one; the
difference, times the window, is how many batch calls are queueing rather than being served. Above
a few, the window shrinks; below, it grows (fast while far from the ceiling). Throughput stays at
what the worker can serve, and a synchronous request finds at most a few batch calls ahead of it.
The ceiling is `batch_slot_share` of the worker's slots, leaving the rest to sync and async jobs,
which are never bounded and sort ahead of batch jobs in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from plumbing.interfaces import Trip
from shared import keys
from shared.batches import BatchStore
from shared.signals import ring_on_message, wait_for_bell
from workers.observer import Finished

log = logging.getLogger(__name__)


class ConcurrencyWindow:
    """How many batch calls one worker should have in flight (Vegas-style, see the module doc).

    `base` is the shortest call time seen, taken while the window is small (it starts at 2): the
    time of a call that queues behind nothing. A long call with only a few in flight cannot be
    queueing, so it means the provider itself got slower: `base` moves up to it. A `base` learnt
    with many in flight may include queueing; halving the window now and then finds the lower one.
    """

    PROBE_EVERY = 20

    def __init__(self, maximum: float, *, initial: float = 2, alpha: float = 2, beta: float = 4) -> None:
        self.maximum = max(1.0, maximum)
        self.value = min(self.maximum, initial)
        self.alpha = alpha
        self.beta = beta
        self.base_ms = math.inf
        self._sum_ms = 0.0
        self._min_ms = math.inf
        self._n = 0
        self._adjustments = 0

    def observe(self, duration_ms: float) -> None:
        self.base_ms = min(self.base_ms, max(duration_ms, 0.1))
        self._min_ms = min(self._min_ms, max(duration_ms, 0.1))
        self._sum_ms += duration_ms
        self._n += 1
        if self._n >= max(4.0, self.value / 2):
            self._adjust()

    def _adjust(self) -> None:
        if self.value <= self.beta + 1 and self._min_ms > 1.25 * self.base_ms:
            self.base_ms = self._min_ms  # too few in flight to queue: the provider is slower now
        average = max(self._sum_ms / self._n, self.base_ms)
        self._sum_ms, self._min_ms, self._n = 0.0, math.inf, 0
        queued = self.value * (1 - self.base_ms / average)
        # a few calls queueing, or a tenth of a large window: either is cheap next to a call
        alpha, beta = max(self.alpha, self.value / 20), max(self.beta, self.value / 10)
        if queued < alpha:
            growth = 1.0 if queued < alpha / 2 else 0.25  # far from queueing: double
            self.value = min(self.maximum, self.value + max(1.0, self.value * growth))
        elif queued > beta:
            self.value = max(1.0, self.value - max(1.0, (queued - beta) / 2))
        self._adjustments += 1
        if self._adjustments % self.PROBE_EVERY == 0:
            # halve now and then: if calls then get faster they were queueing, and `base` learns it
            self.value = max(1.0, self.value / 2)


# How many batch calls a worker lets queue in its event loop (the window's alpha and beta): a few
# where callers' requests share the loop; more in a batch-only worker, whose queueing delays only
# batch items (callers are served by other processes, ahead of it on the CPU), and whose larger
# groups of calls share more round trips (bench/batch.py, same hour: 1,009 and 1,203 prompts/s with
# (2, 4); 1,331 and 1,426 with (8, 16); (4, 8) as much, 1,077-1,403, with a little less queueing).
SHARED_QUEUEING = (2.0, 4.0)
BATCH_ONLY_QUEUEING = (4.0, 8.0)


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
        queueing: tuple[float, float] = SHARED_QUEUEING,
    ) -> None:
        self.store = store
        self.redis = redis
        self.provider = provider
        alpha, beta = queueing
        self.window = ConcurrencyWindow(share * slots_per_worker, alpha=alpha, beta=beta)
        self.max_move = max_move
        self.tick_s = tick_s
        self._poke = asyncio.Event()
        self._live_workers = 1
        self._live_checked = 0.0
        self.moved = 0

    def poke(self) -> None:
        self._poke.set()

    def on_finished(self, event: Finished, trip: Trip) -> None:
        """RequestObserver: a batch job of this worker ended, so a batch slot is free."""
        if event.payload.kind != "batch":
            return
        if not event.failed_over:
            self.window.observe(sum(float(a.get("latencyMs") or 0) for a in event.payload.attempts))
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
            # the worker's stop cancels this task: the wait must not lose that (see wait_for_bell)
            await wait_for_bell(self._poke, max(0.0, next_tick - time.monotonic()))
            self._poke.clear()
            try:
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_s
                    await self._housekeeping()
                cap = await self.cap()
                # refill once a few places are free, not once per ended job (one round trip moves many)
                moved = await self.store.feed(self.provider, cap=cap, max_move=self.max_move, min_move=cap // 8 + 1)
            except (RedisError, OSError) as exc:
                log.warning("batch feed failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            self.moved += moved
            if moved >= self.max_move:
                self._poke.set()  # the bound may allow more

    async def cap(self) -> int:
        """The provider's bound on batch jobs queued or running: this worker's window per live worker
        that takes batch jobs."""
        now = time.monotonic()
        if now - self._live_checked > self.tick_s:
            self._live_checked = now
            self._live_workers = max(1, int(await self.redis.zcard(keys.batch_worker_heartbeat(self.provider))))
        return max(1, math.ceil(self.window.value * self._live_workers))

    async def _housekeeping(self) -> None:
        """Expire batches past their window; finish cancels or expiries a crash interrupted."""
        for batch_id in await self.store.due_for_expiry():
            await self.store.drain_all(batch_id, "expired")
        for batch_id in await self.store.ending():
            await self.store.drain_all(batch_id, await self.store.end_reason(batch_id))

    async def _listen(self) -> None:
        await ring_on_message(self.redis, keys.feed_channel(self.provider), self._poke, "batch feed")
