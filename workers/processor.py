"""What a worker does with one request: start it, call the provider with retries, fail over or finish."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from plumbing.coalescer import Coalescer
from plumbing.deadline import Deadline
from plumbing.interfaces import Trip, TripSender
from shared.capabilities import unserved
from shared.errors import ErrorType, GatewayError
from shared.pricing import PriceBook
from shared.queue import FENCED, Claimed, Outcome, RequestQueue, now_ms
from shared.routing import map_model
from shared.schemas import KIND_PRIORITY, Attempt, Cost, JobPayload, ProviderResult
from shared.settings import Settings
from shared.streams import StreamRelay
from workers.guard import Admission, CallGuard, Settlement, settle_now
from workers.job_lease import LeaseLost, check_lease
from workers.observer import Finished, Observers
from workers.provider_client import ProviderClient
from workers.stream_call import INTERRUPTED, StreamAbandoned, StreamCalls, StreamCut, StreamNotOurs

log = logging.getLogger(__name__)

OUTCOME_STORE_PATIENCE_S = 60.0


class DeadlinePassed(GatewayError):
    """The caller's deadline passed: no call, retry or failover hop starts after it. Retryable for the
    caller (a new request gets a new deadline), never retried or failed over by the worker."""

    def __init__(self, message: str, provider: str | None = None) -> None:
        super().__init__(ErrorType.TIMEOUT, message, retryable=True, provider=provider)


def _retryable(exc: BaseException) -> bool:
    # a `fail_fast` error (the breaker refused: no provider was called) goes straight to failover
    return (
        isinstance(exc, GatewayError)
        and exc.retryable
        and not getattr(exc, "fail_fast", False)
        and not isinstance(exc, (DeadlinePassed, StreamCut))
    )


def _remaining_s(payload: JobPayload) -> float | None:
    """Seconds left before the request's deadline (negative once passed), None without one."""
    return None if payload.deadline_ms is None else (payload.deadline_ms - now_ms()) / 1000


class _RetryAfterBeyond(stop_base):
    """Stop retrying this provider when it asks us to wait longer than our bound: fail over instead."""

    def __init__(self, bound_s: float) -> None:
        self.bound_s = bound_s

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return bool(isinstance(exc, GatewayError) and exc.retry_after and exc.retry_after > self.bound_s)


class Processor:
    def __init__(
        self,
        *,
        provider: str,
        settings: Settings,
        queue: RequestQueue,
        client: ProviderClient,
        guard: CallGuard,
        prices: PriceBook,
        worker_id: str,
        observers: Observers | None = None,
        trips: TripSender | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.queue = queue
        self.client = client
        self.guard = guard
        self.prices = prices
        self.worker_id = worker_id
        self.observers = observers or Observers()
        # outcomes and bookkeeping of jobs ending in the same loop iteration share one round trip
        self.trips = trips or Coalescer(queue.redis)
        self._jitter = wait_random_exponential(multiplier=settings.retry_base_delay_s, max=settings.retry_max_delay_s)
        self.streams = StreamCalls(client, self.trips, queue.redis, worker_id)
        self._relays: dict[str, StreamRelay] = {}  # the streamed requests running here

    def abandon(self, request_id: str) -> None:
        """The client of a streamed request running here went away: stop its upstream call."""
        self.streams.abandon(request_id)

    async def process(self, payload: JobPayload, job: Claimed) -> bool:
        """Run a claimed (or handed-over) job's request to its end. True: its outcome was stored, which
        retired the job and gave its slot back; False: it ended without one (skipped because its
        request had ended, or failed over), and its worker retires it."""
        # each job runs in its own task, so this binds the ids for this request's log lines only
        structlog.contextvars.bind_contextvars(correlation_id=payload.correlation_id, request_id=payload.request_id)
        job_id = job.job_id
        if job.verdict != "ok":
            log.info("job %s skipped: request is %s", job_id, job.verdict)
            return False
        if payload.deadline_ms is None and payload.budget_ms:
            payload.deadline_ms = now_ms() + payload.budget_ms  # an async job's budget runs from its start
        if payload.call.stream:
            return await self._process_streamed(payload, job)
        return await self._process(payload, job_id, job.prepaid)

    async def _process_streamed(self, payload: JobPayload, job: Claimed) -> bool:
        rid = payload.request_id
        relay = self._relays[rid] = StreamRelay(
            rid, self.worker_id, ttl_s=self.settings.result_ttl_s, max_events=self.settings.stream_max_events
        )
        try:
            if job.tries > 1 and await self.queue.redis.exists(relay.stream_key):
                # retaken after its worker died mid-stream: the client has part of the answer, which a
                # new call could not continue; say so rather than call the provider again
                cut = StreamCut(None, 0, self.provider, INTERRUPTED)
                await self.finish_error(rid, cut, payload.attempts, job.job_id, cache_digest=payload.cache_key)
                await self._observe(Finished(payload, self.provider, self._elapsed_ms(payload), error=cut))
                return True
            stored = await self._process(payload, job.job_id, job.prepaid)
            if stored:  # ended here (not failed over): its deltas are kept for resuming a while only

                def keep(trip: Trip) -> None:
                    trip.pipe.expire(relay.stream_key, self.settings.stream_keep_s)

                await self.trips.send_or_log(keep, "a stream's expiry")
            return stored
        except StreamAbandoned as gone:
            await self._finish_abandoned(payload, job.job_id, gone)
            return True
        except StreamNotOurs:
            raise LeaseLost(job.job_id) from None  # the relay found it retaken: given up as any fenced job
        finally:
            del self._relays[rid]
            self.streams.first_delta_ms.pop(rid, None)

    async def _finish_abandoned(self, payload: JobPayload, job_id: str, gone: StreamAbandoned) -> None:
        """Store a stream whose client went away as cancelled, with what it cost so far."""
        cost = self.prices.cost(self.provider, gone.result.model or payload.call.model, gone.result.usage)
        err = GatewayError(
            ErrorType.CANCELLED,
            "the client went away and no one resumed the stream: the provider call was stopped",
            retryable=False,
            provider=self.provider,
        )
        body = err.to_dict()
        body.update(usage=gone.result.usage.to_api(), cost=cost.to_api() if cost else None, attempts=payload.attempts)
        await self._finish(payload.request_id, Outcome("cancelled", orjson.dumps(body)), job_id)
        await self._observe(
            Finished(payload, self.provider, self._elapsed_ms(payload), result=gone.result, cost=cost, error=err),
            gone.settlement,
        )

    async def _process(self, payload: JobPayload, job_id: str, prepaid: bool) -> bool:
        try:
            result, settlement = await self._call_with_retries(payload, prepaid)
        except GatewayError as failure:
            remaining = _remaining_s(payload)
            if remaining is not None and remaining <= 0 and not isinstance(failure, (DeadlinePassed, StreamCut)):
                # the caller has stopped waiting: no failover hop; say why it ended
                failure = DeadlinePassed(f"the request's deadline passed after: {failure.message}", failure.provider)
            moved = await self._fail_over(payload, job_id, failure)
            if not moved:
                await self.finish_error(
                    payload.request_id, failure, payload.attempts, job_id, cache_digest=payload.cache_key
                )
            await self._observe(
                Finished(payload, self.provider, self._elapsed_ms(payload), error=failure, failed_over=moved)
            )
            return not moved
        except RedisError:
            raise  # Redis is away: the job goes back to the queue and runs again (see GatewayWorker._run)
        except (StreamAbandoned, StreamNotOurs):
            raise  # a stream's ends of its own (`_process_streamed`)
        except Exception as exc:  # a bug must still end the request with a fetchable error
            log.exception("unexpected failure in job %s", job_id)
            err = GatewayError(ErrorType.INTERNAL, f"internal error: {type(exc).__name__}", retryable=False)
            await self.finish_error(payload.request_id, err, payload.attempts, job_id, cache_digest=payload.cache_key)
            await self._observe(Finished(payload, self.provider, self._elapsed_ms(payload), error=err))
            return True
        cost = self.prices.cost(self.provider, result.model, result.usage)
        body = self._success_body(payload, result, cost)
        await self._finish(payload.request_id, Outcome("succeeded", body), job_id, cache_digest=payload.cache_key)
        # the caller has its answer: limits, breaker, health, metrics and logs follow in one round trip
        ttft = self.streams.first_delta_ms.get(payload.request_id)
        await self._observe(
            Finished(payload, self.provider, self._elapsed_ms(payload), result=result, cost=cost, ttft_ms=ttft),
            settlement,
        )
        return True

    async def _observe(self, event: Finished, settlement: Settlement | None = None) -> None:
        def fill(trip: Trip) -> None:
            if settlement is not None:
                settlement.queue_on(trip)
            self.observers.finished(event, trip)

        await self.trips.send_or_log(fill, "a request's end")

    async def finish_error(
        self,
        request_id: str,
        err: GatewayError,
        attempts: list[dict[str, Any]],
        job_id: str,
        *,
        cache_digest: str | None = None,
    ) -> None:
        body = err.to_dict()
        body["attempts"] = attempts
        await self._finish(request_id, Outcome("failed", orjson.dumps(body)), job_id, cache_digest=cache_digest)

    async def _finish(self, request_id: str, outcome: Outcome, job_id: str, *, cache_digest: str | None = None) -> None:
        """Store the outcome (and, for a cache leader, the cached answer) and retire the job, giving its
        slot back."""
        # the outcome may have cost a provider call: ride out a short Redis outage rather than lose it
        deadline = time.monotonic() + OUTCOME_STORE_PATIENCE_S
        delay = 0.1
        while True:
            try:
                (stored,) = await self.trips.send(
                    lambda trip: self.queue.finish_into(
                        trip,
                        request_id,
                        outcome,
                        job_id,
                        self.provider,
                        worker=self.worker_id,
                        cache_digest=cache_digest,
                        cache_ttl_s=self.settings.cache_ttl_s,
                    )
                )
                if isinstance(stored, Exception):
                    raise stored
                if stored == FENCED:  # another worker holds the job now: its outcome stands
                    raise LeaseLost(job_id)
                break
            except (RedisError, OSError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("could not store the outcome of %s (%s); retrying", job_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _call_with_retries(self, payload: JobPayload, prepaid: bool) -> tuple[ProviderResult, Settlement]:
        """`prepaid`: the first call's limits were drawn when the job was handed over. The first call
        runs outside tenacity, whose loop costs ~40 us a request at one request at a time, and most
        calls end there; a failed first call becomes the loop's first attempt, so stop, backoff and
        retry decide exactly as for every later one."""
        try:
            return await self._call_once(payload, prepaid)
        except GatewayError as failed:
            first: GatewayError | None = failed
        retrying = AsyncRetrying(
            stop=stop_any(
                stop_after_attempt(self.settings.retry_max_attempts),
                _RetryAfterBeyond(self.settings.retry_max_delay_s),
            ),
            wait=lambda state: self._wait(state, payload),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:
                    first_failure, first = first, None
                    raise first_failure  # the call above, as the first attempt
                return await self._call_once(payload, False)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _call_once(self, payload: JobPayload, prepaid: bool) -> tuple[ProviderResult, Settlement]:
        """One admitted provider call. A failure is settled with the guards at once (the breaker must
        count it before any retry); a success's settlement is handed back, to run after the outcome.
        With a deadline, the wait for the guards and the call itself end there (DeadlinePassed)."""
        await check_lease()  # fencing: a worker back from a pause calls nobody for a job it lost
        call = payload.call
        remaining = _remaining_s(payload)
        if remaining is not None and remaining <= 0 and not prepaid:
            raise DeadlinePassed("the request's deadline passed before a provider was called")
        started = time.perf_counter()
        record = Attempt(provider=self.provider, model=call.model)
        admission: Admission | None = None
        try:
            # one timer for the guards' wait and the call: the provider call's own timeouts are only
            # per step (connect, each read), the deadline caps the whole
            with Deadline(remaining) as deadline:
                try:
                    admission = await self.guard.admit(
                        self.provider, call, priority=KIND_PRIORITY[payload.kind], prepaid=prepaid
                    )
                except GatewayError as err:
                    record.error = err.to_dict()
                    payload.attempts.append(record.to_api())
                    raise
                if remaining is not None and remaining <= 0:
                    raise TimeoutError  # prepaid but already late: give the prepaid draw back below
                if call.stream:  # the deadline bounds the wait for its first delta
                    relay = self._relays[payload.request_id]
                    result = await self.streams.call(call, relay, on_first=deadline.lift)
                else:
                    result = await self.client.complete(call)
        except StreamAbandoned as gone:
            if admission is not None:
                gone.settlement = admission.settle(gone.result.usage, None, gone.latency_ms)
            record.latency_ms = gone.latency_ms
            record.error = {"type": ErrorType.CANCELLED.value, "message": "the client went away"}
            payload.attempts.append(record.to_api())
            raise
        except TimeoutError:
            made = admission is not None and remaining is not None and remaining > 0
            passed = DeadlinePassed(
                "the request's deadline passed while its provider call was under way"
                if made
                else "the request's deadline passed before a provider was called",
                self.provider if made else None,
            )
            if made:
                record.latency_ms = (time.perf_counter() - started) * 1000
                record.error = passed.to_dict()
                payload.attempts.append(record.to_api())
            if admission is not None:
                # settled as a call not made: our deadline, not the provider's failure, and the limits
                # (a prepaid draw too) get the call back
                await settle_now(self.queue.redis, admission, None, DeadlinePassed(passed.message), 0.0)
            raise passed from None
        except GatewayError as err:
            if admission is None:
                raise  # refused by a guard (recorded above)
            record.latency_ms = (time.perf_counter() - started) * 1000
            record.error = err.to_dict()
            payload.attempts.append(record.to_api())
            await settle_now(self.queue.redis, admission, None, err, record.latency_ms)  # counts before a retry
            raise
        record.latency_ms = (time.perf_counter() - started) * 1000
        payload.attempts.append(record.to_api())
        return result, admission.settle(result.usage, None, record.latency_ms)

    def _wait(self, state: RetryCallState, payload: JobPayload | None = None) -> float:
        """Full jitter, but never sooner than the provider's retry-after."""
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, GatewayError) else None
        wait = max(float(self._jitter(state)), retry_after or 0.0)
        remaining = _remaining_s(payload) if payload is not None else None
        # no backoff past the deadline: the next attempt then ends the request at once
        return wait if remaining is None else min(wait, max(remaining, 0.0))

    async def _fail_over(self, payload: JobPayload, job_id: str, err: GatewayError) -> bool:
        """Re-enqueue a retryably failed request on a provider it has not tried yet."""
        if not (err.retryable and self.settings.enable_llm_failover and payload.failover):
            return False
        if isinstance(err, (DeadlinePassed, StreamCut)):
            return False  # no hop for a caller who has stopped waiting, nor for a stream already begun
        target = self.settings.other_provider(self.provider)
        if any(a["provider"] == target for a in payload.attempts):
            return False
        lacking = unserved(target, payload.call)
        if lacking is not None:  # never silently dropped: the request ends here, and its attempts say why
            skipped = GatewayError(
                ErrorType.INVALID_REQUEST,
                f"not failed over to {target}: it does not support `{lacking}`",
                param=lacking,
                retryable=False,
                provider=target,
            )
            model = map_model(payload.call.model, target, self.settings)
            payload.attempts.append(Attempt(provider=target, model=model, error=skipped.to_dict()).to_api())
            return False
        await check_lease()  # fencing: no hop for a job another worker holds now
        hop = int(job_id.rsplit(".", 1)[1]) + 1 if "." in job_id else 1
        moved = dataclasses.replace(
            payload,
            provider=target,
            call=dataclasses.replace(payload.call, model=map_model(payload.call.model, target, self.settings)),
        )
        await self.queue.enqueue(moved, hop=hop)
        log.info("request %s failed over %s -> %s", payload.request_id, self.provider, target)
        return True

    @staticmethod
    def _elapsed_ms(payload: JobPayload) -> float:
        return float(max(now_ms() - payload.created_ms, 0)) if payload.created_ms else 0.0

    def _success_body(self, payload: JobPayload, result: ProviderResult, cost: Cost | None) -> bytes:
        finished = now_ms()
        data = {
            "id": payload.request_id,
            "object": "chat.completion",
            "created": (payload.created_ms or finished) // 1000,
            "provider": self.provider,
            "model": result.model,
            "content": result.content,
            "finishReason": result.finish_reason,
            "usage": result.usage.to_api(),
            "cost": cost.to_api() if cost else None,
            "latencyMs": max(finished - payload.created_ms, 0) if payload.created_ms else None,
            "attempts": payload.attempts,
            "cached": False,
        }
        if result.has_extras:
            data.update(result.answer_extras())
        return orjson.dumps(data)
