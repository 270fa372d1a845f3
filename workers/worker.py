"""arq's Worker, made event-driven and crash-safe for the gateway's queue path.

Five changes to arq's defaults, each keeping arq's own keys and semantics:
- hand-over: a worker keeps its free job slots in the provider's room (a Redis hash, registered on
  each subscription); an enqueue that finds no job waiting that sorts before its own claims the job
  for the worker with the most free slots and sends it on that worker's own channel, so the job
  starts without a claim round trip (and, from the API, with its limits drawn: `Claimed.prepaid`).
  Every job's end gives its slot back: in the script storing its outcome, or on its own
  (`SLOT_BACK_LUA`);
- pickup: otherwise, instead of sleeping `poll_delay` between polls, the worker sleeps until an
  enqueue publishes on its own wake channel (enqueues wake the provider's workers one at a time, in
  turn; batch feeds wake them all) (the poll delay stays as a fallback);
- claim: one Lua script claims up to `free slots` jobs in one round trip (arq does a WATCH/MULTI
  per job), setting arq's in-progress key with a short lease;
- run: the claim also reads each job and counts its try, so running it costs no round trip of its
  own (arq's run_job does a MULTI per job, and formats a log line of its arguments);
- lease: a heartbeat renews the in-progress keys of running jobs, so a SIGKILLed worker's jobs
  are picked up by another worker within `worker_lease_s`, not after the whole job timeout.

A worker takes every kind of job, or only interactive ones (sync and async) or only batch items
(`WORKER_JOB_KINDS`): a batch-only worker claims only batch scores and is never handed a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from signal import Signals
from typing import Any

import orjson
from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw
from arq.worker import JobExecutionFailed, RetryJob, func
from redis.exceptions import RedisError

from shared import keys
from shared.errors import ErrorType, GatewayError
from shared.queue import JOB_FUNCTION, Claimed, now_ms
from shared.schemas import JobPayload
from shared.settings import JobKinds
from shared.signals import ring_on_message, wait_for_bell
from workers.batch_feeder import BatchFeeder
from workers.processor import Processor

log = logging.getLogger(__name__)


async def llm_request(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """The arq job function: everything it needs is in the JSON payload."""
    processor: Processor = ctx["processor"]
    try:
        await processor.process(JobPayload.from_json_dict(payload), ctx["job_id"])
    except (RedisError, OSError) as exc:
        # Redis went away mid-job: arq would retire the job with no outcome stored; run it again instead
        raise RetryJob() from exc


class GatewayWorker(Worker):
    def __init__(
        self,
        *,
        provider: str,
        processor: Processor,
        lease_s: float,
        take_s: float = 0.5,
        scan_limit: int = 2000,
        feeder: BatchFeeder | None = None,
        kinds: JobKinds = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            functions=[func(llm_request, name=JOB_FUNCTION)],
            queue_name=keys.queue(provider),
            ctx={"processor": processor},
            job_serializer=orjson.dumps,
            job_deserializer=orjson.loads,
            keep_result=0,
            log_results=False,
            **kwargs,
        )
        self.provider = provider
        self.processor = processor
        self.lease_ms = int(lease_s * 1000)
        self.take_ms = int(take_s * 1000)
        self.scan_limit = scan_limit
        self._wake = asyncio.Event()
        self.feeder = feeder
        self._background: list[asyncio.Task[None]] = []
        self._scores: dict[str, int] = {}  # claimed job -> its queue score before the claim
        self._wakers = keys.wakers(provider)
        self._own_wake = keys.worker_wake_channel(provider, processor.worker_id)
        self._room = keys.worker_room(provider)
        # a batch-only worker is never handed a job nor woken for one in turn (batch feeds wake everyone)
        self.kinds = kinds
        self._interactive = kinds != "batch"
        self._live_keys = [keys.worker_heartbeat(provider)]
        if kinds != "interactive":
            self._live_keys.append(keys.batch_worker_heartbeat(provider))
        self._active = 0  # jobs launched and not yet ended (some may still wait for a slot)
        self._stopping = False
        # hand-overs started and not yet taken (`_take_handed_over`): a job that ends first needs no take
        self._untaken: set[str] = set()
        self._untaken_bell = asyncio.Event()
        self._late: set[asyncio.Task[None]] = set()  # late hand-overs being asked about
        # a claim and the room's reconciliation never overlap: the count the latter sets is exact
        self._claiming = asyncio.Lock()

    async def main(self) -> None:
        if self._pool is None:
            await super().main()  # pragma: no cover - we always hand arq a pool
            return
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._background = [
            asyncio.create_task(self._listen_for_wakeups(), name="wake-subscriber"),
            asyncio.create_task(self._renew_leases(), name="lease-heartbeat"),
        ]
        if self._interactive:
            self._background.append(asyncio.create_task(self._take_handed_over(), name="hand-over-takes"))
        if self.feeder is not None:
            self._background.append(asyncio.create_task(self.feeder.run(), name="batch-feeder"))
        # an idle worker's claims also return a stalled worker's untaken hand-overs to the queue (see
        # shared/queue.py `evict`), when no enqueue does: at least twice per take bound
        idle_poll_s = min(self.poll_delay_s, self.take_ms / 2000) if self._interactive else self.poll_delay_s
        try:
            while True:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                except RedisError as exc:
                    log.warning("poll failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.2)
                # arq stops a worker by cancelling this task: a wait that can lose that cancellation
                # (asyncio.wait_for on 3.11, when the bell rings in the same turn) never lets it end
                await wait_for_bell(self._wake, idle_poll_s)
        finally:
            for task in self._background:
                task.cancel()

    async def _poll_iteration(self) -> None:
        free = self.max_jobs - self._active
        if free > 0 and self.allow_pick_jobs:
            async with self._claiming:
                claimed = await self.processor.queue.claim(
                    self.provider,
                    self.queue_name,
                    limit=free,
                    lease_ms=self.lease_ms,
                    scan=self.scan_limit + free,
                    worker=self.processor.worker_id,
                    kinds=self.kinds,
                )
                for job in claimed:
                    running = self.tasks.get(job.job_id)
                    if running is not None and not running.done():
                        # ours already: its lease lapsed (Redis away, or this worker stopped) and we took it
                        # back; the claim took a second slot for it, which nothing else would give back
                        self._give_slot_back()
                        continue
                    self._launch(job)
            if len(claimed) >= free:
                self._wake.set()  # the queue may hold more than we had room for
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()
        await self.heart_beat()

    def _launch(self, job: Claimed) -> None:
        """Start a claimed or handed-over job. It is in `tasks` (its lease renewed) from now on, even
        while it waits for a slot (a job handed over as the last slot was taken)."""
        self._active += 1
        self.processor.verdicts[job.job_id] = job.verdict
        if job.prepaid:
            self.processor.prepaid.add(job.job_id)
        self._scores[job.job_id] = job.score
        self.tasks[job.job_id] = self.loop.create_task(self._hold_slot_and_run(job))

    async def _hold_slot_and_run(self, job: Claimed) -> None:
        try:
            await self.sem.acquire()
            self.job_counter += 1
            try:
                await self._run(job)
            finally:
                self._release_sem_dec_counter_on_complete()
        finally:
            self._active -= 1
            self._untaken.discard(job.job_id)  # ended: its outcome took it off the handed set
            if self._active == self.max_jobs - 1:
                self._wake.set()  # a slot freed up after running full: look at the queue again

    def _on_handed_over(self, message: bytes) -> None:
        job = Claimed.handed_over(message)
        if self._stopping and not self._running(job.job_id):
            # handed over as the worker was told to stop: back to the queue at once, not left to its lease
            self.tasks[job.job_id] = self.loop.create_task(self._hand_back(job))
            return
        if self._running(job.job_id) or now_ms() - job.handed_at > self.take_ms // 4:
            # late (this worker was stopped, or the message slow): it may have gone back to the queue
            # and to another worker meanwhile, or been claimed by this worker itself after its lease
            # lapsed unread; run it only if it is still ours and not running (one execution)
            task = self.loop.create_task(self._take_late(job))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return
        # on time: start at once, and take it within a fifth of the bound (`_take_handed_over`),
        # well before anyone could think this worker stalled
        self._untaken.add(job.job_id)
        self._untaken_bell.set()
        self._launch(job)

    def _running(self, job_id: str) -> bool:
        running = self.tasks.get(job_id)
        return running is not None and not running.done()

    async def _take_late(self, job: Claimed) -> None:
        try:
            (ours,) = await self.processor.queue.take(self.provider, self.processor.worker_id, [job.job_id])
        except (RedisError, OSError):
            return  # not taken: it goes back to the queue as a stalled hand-over
        if not ours:
            log.info("job %s was handed to this worker while it was stalled and went to another", job.job_id)
        elif self._running(job.job_id):
            # claimed by this worker itself: the claim took a slot of its own for it, the hand-over's
            # is one too many
            self._give_slot_back()
        elif self._stopping:
            self.tasks[job.job_id] = self.loop.create_task(self._hand_back(job))
        else:
            self._launch(job)

    async def _take_handed_over(self) -> None:
        """Take the hand-overs started since the last take, a fifth of the take bound after the first:
        one round trip for all of them, and none for those that ended first (most, at low load)."""
        interval = self.take_ms / 5000
        while True:
            await self._untaken_bell.wait()
            await asyncio.sleep(interval)
            self._untaken_bell.clear()
            if self._untaken:
                try:
                    await self._take_untaken()
                except (RedisError, OSError) as exc:
                    log.warning("taking hand-overs failed (%s); retrying", type(exc).__name__)
                    self._untaken_bell.set()

    async def _take_untaken(self, **reconcile: Any) -> None:
        """Take the hand-overs started and not yet taken (and, with `reconcile`, set the room entry:
        `RequestQueue.take`). On a Redis error they stay to be taken next time."""
        job_ids, self._untaken = list(self._untaken), set()
        try:
            taken = await self.processor.queue.take(self.provider, self.processor.worker_id, job_ids, **reconcile)
        except BaseException:
            self._untaken.update(j for j in job_ids if self._running(j))
            raise
        for job_id, ours in zip(job_ids, taken, strict=True):
            if not ours and self._running(job_id):
                # this worker was thought stalled (a pause longer than the bound between the start and
                # this take): the job went back to the queue and may run twice
                log.warning("job %s was taken back from this worker while it ran here", job_id)

    def _give_slot_back(self) -> None:
        task = self.loop.create_task(
            self.processor.trips.send_or_log(
                lambda trip: self.processor.queue.slot_back_into(trip, self.provider, self.processor.worker_id),
                "a job slot given back",
            )
        )
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _hand_back(self, job: Claimed) -> None:
        with contextlib.suppress(RedisError, OSError):  # if Redis is away, the lease lapses instead
            async with self.pool.pipeline(transaction=True) as pipe:
                pipe.zadd(self.queue_name, {job.job_id: job.score}, xx=True)
                pipe.delete(in_progress_key_prefix + job.job_id)
                pipe.zrem(keys.handed(self.provider, self.processor.worker_id), job.job_id)
                await pipe.execute()

    def handle_sig(self, signum: Signals) -> None:
        self._stopping = True
        super().handle_sig(signum)

    async def _run(self, job: Claimed) -> None:
        """arq's run_job for a claimed job: the same outcomes (done, handed back, failed) and arq's
        bookkeeping through finish_job / finish_failed_job."""
        job_id = job.job_id
        try:
            if job.job is None:
                raise JobExecutionFailed("job expired")
            name, args, kwargs, _, _ = deserialize_job_raw(job.job, deserializer=self.job_deserializer)
            function = self.functions[name]
        except (JobExecutionFailed, SerializationError, KeyError) as exc:
            log.warning("job %s cannot run: %r", job_id, exc)
            return await self._give_up(job_id)
        if job.tries > self.max_tries:
            log.warning("job %s: max %d tries exceeded", job_id, self.max_tries)
            return await self._give_up(job_id)
        ctx = {**self.ctx, "job_id": job_id, "job_try": job.tries, "score": job.score}
        finish = True
        try:
            async with asyncio.timeout(self.job_timeout_s):
                await function.coroutine(ctx, *args, **kwargs)
            self.jobs_complete += 1
        except (RetryJob, asyncio.CancelledError):
            finish = False  # Redis went away mid-job, or the worker is stopping: the job runs again
            self.jobs_retried += 1
        except Exception:  # the processor ends its request on every error; this is a timeout or a bug
            log.exception("job %s failed", job_id)
            return await self._give_up(job_id)
        await asyncio.shield(self.finish_job(job_id, finish, None, None, False, None, None))

    async def _give_up(self, job_id: str) -> None:
        """End the job and its request with an error (see finish_failed_job)."""
        self.jobs_failed += 1
        await asyncio.shield(self.finish_failed_job(job_id, None))

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        score = self._scores.pop(job_id, None)
        if job_id in self.processor.retired:
            self.processor.retired.discard(job_id)  # retired with its outcome already, its slot given back
            return
        finish, incr_score = args[0], args[4]  # arq passes (finish, result, ttl, forever, incr_score, ...)
        if not finish and incr_score is None and score is not None:
            # handed back to the queue (shutdown, Redis trouble): due again at once, in its old place
            await self.pool.zadd(self.queue_name, {job_id: score}, xx=True)
        await super().finish_job(job_id, *args, **kwargs)
        await self.processor.trips.send_or_log(
            lambda trip: self.processor.queue.slot_back_into(trip, self.provider, self.processor.worker_id, job_id),
            "a job slot given back",
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq gave up on a job (expired, or tried too often after crashes): end its request too."""
        self.processor.verdicts.pop(job_id, None)
        err = GatewayError(ErrorType.INTERNAL, "the job could not be completed by any worker", retryable=False)
        await self.processor.finish_error(keys.request_id_of_job(job_id), err, [], job_id)
        self.processor.retired.discard(job_id)
        await super().finish_failed_job(job_id, result_data)

    async def _listen_for_wakeups(self) -> None:
        """Wake-ups (an enqueue wakes one worker in turn on its own channel; batch feeds wake them all)
        and jobs handed over on the own channel. On each (re)subscription the worker (re)enters the
        room with its free slots: until then nobody could hand it a job (an enqueue checks that the
        channel has a listener), so the count is exact."""
        if not self._interactive:
            await ring_on_message(self.pool, keys.wake_channel(self.provider), self._wake, "wake")
            return
        await ring_on_message(
            self.pool,
            keys.wake_channel(self.provider),
            self._wake,
            "wake",
            also=[self._own_wake],
            on_data=self._on_handed_over,
            on_subscribed=self._enter_room,
        )

    async def _enter_room(self) -> None:
        if self.allow_pick_jobs:
            free = str(max(self.max_jobs - self._active, 0))
            await self.pool.hset(self._room, self.processor.worker_id, free)  # type: ignore[misc]

    async def _renew_leases(self) -> None:
        """Keep running jobs' in-progress keys alive, and announce this worker as live."""
        interval = self.lease_ms / 3000
        while True:
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    deadline = now_ms() + self.lease_ms
                    for job_id in list(self.tasks):
                        pipe.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
                        pipe.zadd(self.queue_name, {job_id: deadline}, xx=True)  # still ours: not due
                    for live_key in self._live_keys:
                        pipe.zadd(live_key, {self.processor.worker_id: now_ms()})
                        pipe.zremrangebyscore(live_key, "-inf", now_ms() - 3 * self.lease_ms)
                    if self._interactive and not self._stopping:
                        # in the enqueues' wake rotation (again, after a Redis restart or being dropped)
                        pipe.lrem(self._wakers, 0, self._own_wake)
                        pipe.rpush(self._wakers, self._own_wake)
                    await pipe.execute()
                if self._interactive:
                    await self._reconcile_room()
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _reconcile_room(self) -> None:
        """Set this worker's free slots in the room from the truth (see TAKE_LUA), and rejoin the room
        after an eviction (this worker was stalled) or a Redis restart."""
        rejoin = self.allow_pick_jobs and not self._stopping
        async with self._claiming:
            # the hand-overs started and not yet taken are taken first: they count among the running
            # jobs, not among the hand-overs still unread
            await self._take_untaken(max_jobs=self.max_jobs if rejoin else None, running=self._active, rejoin=rejoin)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.pool.hdel(self._room, self.processor.worker_id)  # type: ignore[misc]
            for live_key in self._live_keys:
                await self.pool.zrem(live_key, self.processor.worker_id)
            await self.pool.lrem(self._wakers, 0, self._own_wake)  # type: ignore[misc]
        await super().close()
