"""The worker's own loop over arq's job format: event-driven, crash-safe, stopped gracefully.

Jobs keep arq's layout and keys (`arq:job:*`, `arq:in-progress:*`, `arq:retry:*`, the queue's sorted
set; a job's bytes are arq's `serialize_job` format), so arq's own tools still read the queue. The loop
is ours: arq's Worker polls and claims one job per WATCH/MULTI, runs each with a MULTI of its own,
and stops by cancelling running jobs; a gateway worker needs none of that and all of this:
- hand-over: a worker keeps its free job slots in the provider's room (a Redis hash, registered on
  each subscription); an enqueue that finds no job waiting that sorts before its own claims the job
  for the worker with the most free slots and sends it on that worker's own channel, so the job
  starts without a claim round trip (and, from the API, with its limits drawn: `Claimed.prepaid`).
  Every job's end gives its slot back: in the script storing its outcome, or on its own
  (`queue_slot_back.lua`);
- pickup: otherwise the worker sleeps until an enqueue publishes on its own wake channel (its
  doorbell: enqueues wake the provider's workers one at a time, in turn; batch feeds wake them all),
  with a slow poll as a fallback;
- claim: one Lua script claims up to `free slots` jobs in one round trip, reads each, counts its try
  and sets arq's in-progress key with a short lease;
- lease: a heartbeat renews the in-progress keys of running jobs, so a SIGKILLed worker's jobs are
  picked up by another worker within `worker_lease_s`, not after the whole job timeout; it also sets
  the worker's room entry from the truth (`RequestQueue.take`). Leases are fenced: a worker paused
  past its lease whose job another worker retook renews nothing, calls no provider again and stores
  nothing (`workers/job_lease.py`, `shared/lua/lib/holder.lua`): it gives the job up, counted as
  `fenced`;
- stop (SIGTERM/SIGINT, or `stop()`): the worker leaves the room and takes no more jobs, lets the
  running ones end within `worker_stop_grace_s`, then hands the rest back to the queue, in their
  old places, and exits. A second signal hands them back at once.

What a job carries (its claim's verdict, whether its limits were prepaid, its queue score) travels
with it as its `Claimed` value; whether its outcome retired it is what `Processor.process` answers.

A worker takes every kind of job, or only interactive ones (sync and async) or only batch items
(`WORKER_JOB_KINDS`): a batch-only worker claims only batch scores and is never handed a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from arq.jobs import SerializationError, deserialize_job_raw
from redis.asyncio import Redis
from redis.exceptions import RedisError

from plumbing.interfaces import Trip
from shared import keys, metrics
from shared.errors import ErrorType, GatewayError
from shared.queue import FENCED, JOB_FUNCTION, Claimed, now_ms
from shared.schemas import JobPayload
from shared.settings import JobKinds
from shared.signals import ring_on_message, wait_for_bell
from shared.streams import ABANDON_PREFIX
from workers.batch_feeder import BatchFeeder
from workers.job_lease import JobLease, LeaseLost, hold
from workers.processor import Processor

log = logging.getLogger(__name__)

MAX_TRIES = 5  # claims of one job (crashes, lapsed leases) before it is given up: arq's default
HEALTH_CHECK_INTERVAL_S = 3600  # arq's health-check key (`arq --check`), refreshed as often as arq does

Hook = Callable[[], Awaitable[None]]


class GatewayWorker:
    def __init__(
        self,
        *,
        provider: str,
        processor: Processor,
        redis: Redis,
        lease_s: float,
        max_jobs: int,
        poll_delay_s: float,
        job_timeout_s: float,
        stop_grace_s: float,
        take_s: float = 0.5,
        scan_limit: int = 2000,
        max_tries: int = MAX_TRIES,
        feeder: BatchFeeder | None = None,
        kinds: JobKinds = "all",
        handle_signals: bool = True,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
    ) -> None:
        self.provider = provider
        self.processor = processor
        self.redis = redis
        self.queue_name = keys.queue(provider)
        self.max_jobs = max_jobs
        self.poll_delay_s = poll_delay_s
        self.job_timeout_s = job_timeout_s
        self.stop_grace_s = stop_grace_s
        self.max_tries = max_tries
        self.lease_ms = int(lease_s * 1000)
        self.lease_s = lease_s
        self.take_s = take_s
        self.take_ms = int(take_s * 1000)
        self.scan_limit = scan_limit
        self.feeder = feeder
        self.handle_signals = handle_signals
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.jobs: dict[str, asyncio.Future[None]] = {}  # running here (or waiting for a slot), by job id
        self.leases: dict[str, JobLease] = {}  # the leases of those jobs, as this worker knows them
        self._slots = asyncio.Semaphore(max_jobs)  # a job handed over as the last slot was taken waits
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._wakers = keys.wakers(provider)
        self._own_wake = keys.worker_wake_channel(provider, processor.worker_id)
        self._room = keys.worker_room(provider)
        self._health_key = self.queue_name + ":health-check"  # arq's health-check key for this queue
        # a batch-only worker is never handed a job nor woken for one in turn (batch feeds wake everyone)
        self.kinds = kinds
        self._interactive = kinds != "batch"
        self._live_keys = [keys.worker_heartbeat(provider)]
        if kinds != "interactive":
            self._live_keys.append(keys.batch_worker_heartbeat(provider))
        self._active = 0  # jobs launched and not yet ended (some may still wait for a slot)
        self._stopping = False
        self._hurry = asyncio.Event()  # stop at once: running jobs go back to the queue
        self._main: asyncio.Task[None] | None = None
        self._closed = False
        # hand-overs started and not yet taken (`_take_handed_over`): a job that ends first needs no take
        self._untaken: set[str] = set()
        self._untaken_bell = asyncio.Event()
        self._late: set[asyncio.Task[None]] = set()  # late hand-overs being asked about, slots given back
        # a claim and the room's reconciliation never overlap: the count the latter sets is exact
        self._claiming = asyncio.Lock()
        self.jobs_complete = self.jobs_failed = self.jobs_retried = self.jobs_fenced = 0

    # -- running and stopping ------------------------------------------------------------------

    def run(self) -> None:
        """Run in the current event loop until stopped (SIGTERM/SIGINT), then close."""
        loop = asyncio.get_event_loop()
        try:
            loop.run_until_complete(self.async_run())
        finally:
            loop.run_until_complete(self.close())

    async def async_run(self) -> None:
        """Run until stopped (`stop`, or a signal with `handle_signals`), running jobs ended or handed back."""
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.handle_sig, signum)
        if self.on_startup is not None:
            await self.on_startup()
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
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                except (RedisError, OSError) as exc:
                    log.warning("poll failed (%s); retrying", type(exc).__name__)
                    await wait_for_bell(self._hurry, 0.2)  # a stop does not wait for Redis
                if not self._stopping:
                    await wait_for_bell(self._wake, idle_poll_s)
            await self._drain()
        except asyncio.CancelledError:
            # cancelled from outside: no grace (leases would no longer be renewed), hand jobs back now
            self.stop(hurry=True)
            await self._drain()
            raise
        finally:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if self.handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)

    def handle_sig(self, signum: int = signal.SIGTERM) -> None:
        """SIGTERM/SIGINT: stop gracefully; a second one: hand running jobs back at once."""
        log.info("worker %s: %s", self.processor.worker_id, "stopping now" if self._stopping else "stopping")
        self.stop(hurry=self._stopping)

    def stop(self, *, hurry: bool = False) -> None:
        """Take no more jobs and end `async_run` once the running ones have ended, or, after the stop
        grace (at once with `hurry`), been handed back to the queue."""
        self._stopping = True
        self._wake.set()
        if hurry:
            self._hurry.set()

    async def _drain(self) -> None:
        """Leave the room, let running jobs end within the grace, hand the rest back."""
        await self._leave_room()
        deadline = time.monotonic() + self.stop_grace_s
        hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
        try:
            while (running := [j for j in self.jobs.values() if not j.done()]) and not self._hurry.is_set():
                pending: list[asyncio.Future[Any]] = [*running, hurry]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
        running = [j for j in self.jobs.values() if not j.done()]
        if running:
            log.info("stopping: %d running jobs go back to the queue", len(running))
        for job in running:
            job.cancel()  # `_run` hands it back
        await asyncio.gather(*running, *self._late, return_exceptions=True)

    async def close(self) -> None:
        """Stop (if running, wait for `async_run` to end), leave the room and release everything.
        Never cancels a job's last step: a job mid-call ends within the grace or goes back to the queue."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        main = self._main
        if main is not None and not main.done() and main is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(main)
        else:
            await self._drain()  # never run, or run and ended: what it started still ends cleanly
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self._health_key)
        if self.on_shutdown is not None:
            await self.on_shutdown()
        await self.redis.aclose()

    async def _leave_room(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(self._room, self.processor.worker_id)
                for live_key in self._live_keys:
                    pipe.zrem(live_key, self.processor.worker_id)
                pipe.lrem(self._wakers, 0, self._own_wake)
                await pipe.execute()

    # -- taking jobs ---------------------------------------------------------------------------

    async def _poll_iteration(self) -> None:
        free = self.max_jobs - self._active
        if free > 0 and not self._stopping:
            async with self._claiming:
                sent_at = time.monotonic()  # the claimed leases end no sooner than a lease from now
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
                    if self._running(job.job_id):
                        # ours already: its lease lapsed (Redis away, or this worker stopped) and we took it
                        # back; the claim took a second slot for it, which nothing else would give back
                        self._give_slot_back()
                        if (lease := self.leases.get(job.job_id)) is not None:
                            lease.reclaimed(sent_at, self.lease_s)
                        continue
                    self._launch(job, JobLease.claimed(job.job_id, job.score, sent_at, self.lease_s))
            if len(claimed) >= free:
                self._wake.set()  # the queue may hold more than we had room for

    def _launch(self, job: Claimed, lease: JobLease) -> None:
        """Start a claimed or handed-over job. It is in `jobs` (its lease renewed) from now on, even
        while it waits for a slot (a job handed over as the last slot was taken)."""
        self._active += 1
        self.leases[job.job_id] = lease
        task = asyncio.get_running_loop().create_task(self._hold_slot_and_run(job, lease))
        self.jobs[job.job_id] = task
        task.add_done_callback(lambda done: self._ended(job.job_id, done))

    def _ended(self, job_id: str, task: asyncio.Future[None]) -> None:
        if self.jobs.get(job_id) is task:
            del self.jobs[job_id]
            del self.leases[job_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("job %s ended with an error its worker could not handle", job_id, exc_info=exc)

    async def _hold_slot_and_run(self, job: Claimed, lease: JobLease) -> None:
        hold(lease, self._check_lease)  # what the processor's lease checks ask, in this job's task
        try:
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:
                await self._hand_back(job)  # stopped before it could start
                raise
            try:
                await self._run(job)
            finally:
                self._slots.release()
        finally:
            self._active -= 1
            self._untaken.discard(job.job_id)  # ended: its outcome took it off the handed set
            if self._active == self.max_jobs - 1:
                self._wake.set()  # a slot freed up after running full: look at the queue again

    def _running(self, job_id: str) -> bool:
        running = self.jobs.get(job_id)
        return running is not None and not running.done()

    def _on_own_channel(self, message: bytes) -> None:
        """A message on the worker's own channel: a job handed over, or a stream to stop."""
        if message.startswith(ABANDON_PREFIX):
            self.processor.abandon(message[len(ABANDON_PREFIX) :].decode())
        else:
            self._on_handed_over(message)

    def _on_handed_over(self, message: bytes) -> None:
        job = Claimed.handed_over(message)
        if self._stopping and not self._running(job.job_id):
            # handed over as the worker was told to stop: back to the queue at once, not left to its lease
            self._background_task(self._hand_back(job))
            return
        if self._running(job.job_id) or now_ms() - job.handed_at > self.take_ms // 4:
            # late (this worker was stopped, or the message slow): it may have gone back to the queue
            # and to another worker meanwhile, or been claimed by this worker itself after its lease
            # lapsed unread; run it only if it is still ours and not running (one execution)
            self._background_task(self._take_late(job))
            return
        # on time: start at once, and take it within a fifth of the bound (`_take_handed_over`),
        # well before anyone could think this worker stalled
        self._untaken.add(job.job_id)
        self._untaken_bell.set()
        self._launch(job, JobLease.handed_over(job.job_id, job.score, job.handed_at, self.take_s))

    def _background_task(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._late.add(task)
        task.add_done_callback(self._late.discard)

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
            await self._hand_back(job)
        else:
            lease = JobLease.handed_over(job.job_id, job.score, job.handed_at, self.take_s)
            lease.took(self.lease_s)
            self._launch(job, lease)

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
            lease = self.leases.get(job_id)
            if lease is None:
                continue
            if ours:
                lease.took(self.lease_s)
            elif self._running(job_id):
                # this worker was thought stalled (a pause longer than the bound between the start and
                # this take): the job went back to the queue for another worker; it is given up here
                # at its next lease check (a call already under way may have run twice)
                log.warning("job %s was taken back from this worker while it ran here", job_id)
                lease.verdict(FENCED)

    # -- running one job -----------------------------------------------------------------------

    async def _run(self, job: Claimed) -> None:
        """Run one job to one of its ends: its outcome stored (by the processor), retired without one
        (skipped, failed over), handed back to the queue (Redis away, the worker stopping), or given up
        (unreadable, tried too often, timed out) with an error outcome for its request."""
        job_id = job.job_id
        try:
            if job.job is None:
                raise SerializationError("job expired")
            name, args, _, _, _ = deserialize_job_raw(job.job, deserializer=orjson.loads)
            if name != JOB_FUNCTION:
                raise SerializationError(f"unknown job function {name!r}")
            payload = JobPayload.from_json_dict(args[0])
        except (SerializationError, ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("job %s cannot run: %r", job_id, exc)
            return await self._give_up(job_id)
        if job.tries > self.max_tries:
            log.warning("job %s: max %d tries exceeded", job_id, self.max_tries)
            return await self._give_up(job_id)
        try:
            async with asyncio.timeout(self.job_timeout_s):
                retired = await self.processor.process(payload, job)
        except asyncio.CancelledError:
            # the worker is stopping and the grace is over: the job runs again elsewhere
            self.jobs_retried += 1
            await self._hand_back(job)
            raise
        except LeaseLost as lost:
            return await self._fenced(lost)
        except TimeoutError:  # the job's own bound (the processor bounds each call far below it)
            log.exception("job %s timed out", job_id)
            return await self._give_up(job_id)
        except (RedisError, OSError):
            # Redis went away mid-job: run it again rather than retire it with no outcome stored
            self.jobs_retried += 1
            await self._hand_back(job)
            return
        except Exception:  # the processor ends its request on every error; this is a timeout or a bug
            log.exception("job %s failed", job_id)
            return await self._give_up(job_id)
        self.jobs_complete += 1
        if not retired:
            await self.processor.trips.send_or_log(
                lambda trip: self.processor.queue.retire_into(trip, self.provider, self.processor.worker_id, job_id),
                "a job retired",
            )

    async def _give_up(self, job_id: str) -> None:
        """End the job and its request with an error: no worker will run it."""
        self.jobs_failed += 1
        err = GatewayError(ErrorType.INTERNAL, "the job could not be completed by any worker", retryable=False)
        try:
            await self.processor.finish_error(keys.request_id_of_job(job_id), err, [], job_id)
        except (RedisError, OSError) as exc:
            log.warning("could not end job %s (%s): its lease will lapse", job_id, type(exc).__name__)
        except LeaseLost as lost:
            await self._fenced(lost)

    async def _fenced(self, lost: LeaseLost) -> None:
        """Give up a job this worker no longer holds, silently: no outcome, no provider call, its slot
        back (and its keys, if the job is over; another worker's job is left to it). Counted: `fenced`
        per provider in the metrics. The log line names the job id only (no content of the request)."""
        self.jobs_fenced += 1
        log.warning("job %s given up: this worker no longer holds it (paused past its lease?)", lost.job_id)

        def fill(trip: Trip) -> None:
            self.processor.queue.retire_into(trip, self.provider, self.processor.worker_id, lost.job_id)
            metrics.count_fenced_into(trip, self.provider)

        await self.processor.trips.send_or_log(fill, "a fenced job given up")

    async def _check_lease(self, lease: JobLease) -> None:
        """Ask Redis whether this worker still holds `lease`'s job, renewing it if so (queue_renew.lua)."""
        sent_at = time.monotonic()
        (held,) = await self.processor.queue.renew(
            self.provider, self.processor.worker_id, [(lease.job_id, lease.score)], lease_ms=self.lease_ms
        )
        lease.verdict(held)
        lease.confirmed(sent_at, self.lease_s)

    async def _hand_back(self, job: Claimed) -> None:
        """Back to the queue, due at once in its old place, its lease dropped and its slot given back;
        if Redis is away, the lease lapses instead."""
        await self.processor.trips.send_or_log(
            lambda trip: self.processor.queue.hand_back_into(
                trip, self.provider, self.processor.worker_id, job.job_id, job.score
            ),
            "a job handed back",
        )

    def _give_slot_back(self) -> None:
        self._background_task(
            self.processor.trips.send_or_log(
                lambda trip: self.processor.queue.slot_back_into(trip, self.provider, self.processor.worker_id),
                "a job slot given back",
            )
        )

    # -- background: doorbells, hand-overs, leases, the room ------------------------------------

    async def _listen_for_wakeups(self) -> None:
        """Wake-ups (an enqueue wakes one worker in turn on its own channel; batch feeds wake them all)
        and jobs handed over on the own channel. On each (re)subscription the worker (re)enters the
        room with its free slots: until then nobody could hand it a job (an enqueue checks that the
        channel has a listener), so the count is exact."""
        if not self._interactive:
            await ring_on_message(self.redis, keys.wake_channel(self.provider), self._wake, "wake")
            return
        await ring_on_message(
            self.redis,
            keys.wake_channel(self.provider),
            self._wake,
            "wake",
            also=[self._own_wake],
            on_data=self._on_own_channel,
            on_subscribed=self._enter_room,
        )

    async def _enter_room(self) -> None:
        if not self._stopping:
            free = str(max(self.max_jobs - self._active, 0))
            await self.redis.hset(self._room, self.processor.worker_id, free)  # type: ignore[misc]

    async def _renew_leases(self) -> None:
        """Keep running jobs' in-progress keys alive, announce this worker as live, and keep its room
        entry true. It runs while a stopping worker's jobs end, so their leases hold."""
        interval = self.lease_ms / 3000
        health_due = 0.0
        while True:
            try:
                await self._renew_job_leases()
                async with self.redis.pipeline(transaction=False) as pipe:
                    if not self._stopping:
                        for live_key in self._live_keys:
                            pipe.zadd(live_key, {self.processor.worker_id: now_ms()})
                            pipe.zremrangebyscore(live_key, "-inf", now_ms() - 3 * self.lease_ms)
                        if self._interactive:
                            # in the enqueues' wake rotation (again, after a Redis restart or being dropped)
                            pipe.lrem(self._wakers, 0, self._own_wake)
                            pipe.rpush(self._wakers, self._own_wake)
                    if time.monotonic() >= health_due:
                        health_due = time.monotonic() + HEALTH_CHECK_INTERVAL_S
                        pipe.psetex(self._health_key, (HEALTH_CHECK_INTERVAL_S + 1) * 1000, self._health())
                    await pipe.execute()
                if self._interactive:
                    await self._reconcile_room()
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _renew_job_leases(self) -> None:
        """Renew the leases of the jobs this worker still holds (fenced: a job another worker retook
        is marked lost, and given up at its next lease check; see workers/job_lease.py)."""
        leases = [lease for lease in self.leases.values() if not lease.lost]
        if not leases:
            return
        sent_at = time.monotonic()
        verdicts = await self.processor.queue.renew(
            self.provider,
            self.processor.worker_id,
            [(lease.job_id, lease.score) for lease in leases],
            lease_ms=self.lease_ms,
        )
        for lease, held in zip(leases, verdicts, strict=True):
            lease.verdict(held)
            lease.confirmed(sent_at, self.lease_s)

    def _health(self) -> str:
        return (
            f"{time.strftime('%b-%d %H:%M:%S')} j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
            f"j_retried={self.jobs_retried} j_fenced={self.jobs_fenced} j_ongoing={len(self.jobs)} "
            f"worker={self.processor.worker_id}"
        )

    async def _reconcile_room(self) -> None:
        """Set this worker's free slots in the room from the truth (see shared/lua/queue_take.lua), and rejoin the room
        after an eviction (this worker was stalled) or a Redis restart."""
        rejoin = not self._stopping
        async with self._claiming:
            # the hand-overs started and not yet taken are taken first: they count among the running
            # jobs, not among the hand-overs still unread
            await self._take_untaken(max_jobs=self.max_jobs if rejoin else None, running=self._active, rejoin=rejoin)
