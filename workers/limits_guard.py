"""The limits guard: every provider call takes a request and its estimated tokens from the shared buckets
(global and its provider's) before it is made, and trades the estimate for the real usage after.

A call that finds no capacity waits for it, without burning a retry or hammering Redis. In each worker
process one gate lets a single coroutine ask Redis at a time while the others queue behind it, by
priority (sync, async, batch) and then in arrival order. The head's ask reserves: if the buckets will
hold its cost within RESERVE_AHEAD_MS, the script takes it now (leaving the buckets in debt, so every
later ask, from any process, is scheduled after it) and answers how long until the reserved moment; the
head sleeps exactly that long, then calls. So each admitted call costs one script run, however many
processes compete, and calls leave at the pace of the buckets. (A reservation given up, by a cancelled
job, is given back.) The head also tells the script how many calls its gate holds; the API adds those
counts up to estimate how long a new synchronous request would queue (see `api/rate_limits.py`).

Calls often reach the gate together (a claim hands a worker many jobs at once, a batch most of all).
So a head with calls queued behind it first asks for them too, in the same script run: their requests
and tokens summed, at most a full bucket, and only if the buckets hold it all now (no reservation).
Granted, they all go at once; refused, nothing is taken and the head asks for itself as above.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from plumbing.coalescer import Coalescer
from plumbing.interfaces import Trip, TripSender
from shared.errors import GatewayError
from shared.limits import BucketStore, Draw, LimitPlan, Verdict, verdict_of
from shared.schemas import ProviderCall, Usage
from shared.settings import Settings
from shared.token_estimate import estimate_call
from workers.guard import Admission, settle_now
from workers.observer import Finished

log = logging.getLogger(__name__)

RESERVE_AHEAD_MS = 10_000  # a head reserves capacity up to this far ahead; beyond, it sleeps and asks again


@dataclass(order=True)
class _Waiting:
    priority: int
    arrival: int
    turn: asyncio.Future[bool] = field(compare=False)  # True: admitted with a group; False: your turn
    call: Any = field(compare=False)


class AdmissionGate:
    """One asker at a time per process; the rest wait locally, by priority, then first come first served:
    a synchronous call never queues behind the batch calls its worker already holds.

    With `admit_group`, a new head first offers the calls waiting behind it (in that order) to
    `admit_group(head call, waiting calls, holding)`, which answers how many of them, from the front,
    were admitted together with the head, or -1 if none and not the head either. `abandon(call)` is told
    about a call admitted with a group whose waiter was cancelled meanwhile."""

    def __init__(
        self,
        admit_group: Callable[[Any, list[Any], int], Awaitable[int]] | None = None,
        abandon: Callable[[Any], None] | None = None,
        max_group: int = 64,
    ) -> None:
        self._busy = False
        self._waiting: list[_Waiting] = []  # a heap
        self._arrivals = itertools.count()
        self._admit_group = admit_group
        self._abandon = abandon
        self._max_group = max_group
        self.holding = 0  # calls in the gate, the asker included

    async def enter(
        self, ask: Callable[[int], Awaitable[tuple[bool, float]]], priority: int = 1, call: Any = None
    ) -> None:
        """Ask until granted. `ask(holding)` answers (granted, seconds): a grant may start that many
        seconds from now (a reservation), a refusal says when to ask again. Either way the head sleeps
        exactly that long, holding the gate."""
        self.holding += 1
        try:
            if await self._acquire(priority, call):
                return  # admitted with a head's group
            try:
                if await self._group(call):
                    return
                while True:
                    granted, wait = await ask(self.holding)
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if granted:
                        return
            finally:
                self._release()
        finally:
            self.holding -= 1

    async def _group(self, call: Any) -> bool:
        if self._admit_group is None or not self._waiting:
            return False
        popped = [heapq.heappop(self._waiting) for _ in range(min(len(self._waiting), self._max_group - 1))]
        members = [m for m in popped if not m.turn.done()]  # cancelled waiters leave the queue here
        if not members:
            return False
        admitted = -1
        try:
            admitted = await self._admit_group(call, [m.call for m in members], self.holding)
        finally:
            for member in members[max(admitted, 0) :]:
                heapq.heappush(self._waiting, member)  # not in the group: back in their places
        for member in members[: max(admitted, 0)]:
            if member.turn.done():  # cancelled while we asked for it
                if self._abandon is not None:
                    self._abandon(member.call)
            else:
                member.turn.set_result(True)
        return admitted >= 0

    async def _acquire(self, priority: int, call: Any) -> bool:
        if not self._busy:
            self._busy = True
            return False
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, _Waiting(priority, next(self._arrivals), turn, call))
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                if turn.result():  # admitted with a group as we were cancelled: give it back
                    if self._abandon is not None:
                        self._abandon(call)
                else:
                    self._release()  # the gate was handed to us as we were cancelled: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            turn = heapq.heappop(self._waiting).turn
            if not turn.done():
                turn.set_result(False)  # hand the gate over: it stays busy
                return
        self._busy = False


class LimitsAdmission:
    def __init__(self, guard: LimitsGuard, provider: str, estimate: int) -> None:
        self.guard = guard
        self.provider = provider
        self.estimate = estimate

    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        """Replace the estimate by the real usage: refund what was not used, charge what was exceeded.
        A call that failed without usage used no tokens; one never made (an error without a provider,
        as `ChainGuard` settles) gives back its request too."""
        actual = usage.total_tokens if usage is not None else 0
        draws = self.guard.plan.token_draws(self.provider, actual - self.estimate)
        if usage is None and (error is None or error.provider is None):
            plan = self.guard.plan
            draws += [Draw(plan.global_.requests, -1), Draw(plan.provider(self.provider).requests, -1)]
        self.guard.store.adjust(trip, draws)


class _Free:
    """What a call gets when Redis cannot be asked: the limiter fails open rather than stopping traffic."""

    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Call:
    provider: str
    estimate: int


class LimitsGuard:
    """The CallGuard of the shared rate limits."""

    def __init__(self, redis: Redis, settings: Settings, gate_id: str, trips: TripSender | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.store = BucketStore(redis)
        self.plan = LimitPlan(settings)
        self.gate = AdmissionGate(self._admit_group, self._give_back)
        self.gate_id = gate_id
        # a draw shares its round trip with the process's other writes
        self.trips: TripSender = trips or Coalescer(redis)
        self._refunds: set[asyncio.Task[None]] = set()

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Admission:
        estimate = estimate_call(call, provider, self.settings)
        if prepaid:  # the enqueue drew this call's request and estimated tokens (api/rate_limits.py)
            return LimitsAdmission(self, provider, estimate)
        draws = self.plan.call_draws(provider, estimate)
        reserved = False

        async def ask(holding: int) -> tuple[bool, float]:
            nonlocal reserved
            verdict = await self._draw(draws, max_take_wait_ms=RESERVE_AHEAD_MS, holding=holding)
            reserved = verdict.ok
            return verdict.ok, verdict.take_wait_ms / 1000

        admission = LimitsAdmission(self, provider, estimate)
        try:
            await self.gate.enter(ask, priority, _Call(provider, estimate))
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unreachable (%s); letting the call through", type(exc).__name__)
            return _Free()
        except asyncio.CancelledError:
            if reserved:  # cancelled while sleeping towards its reserved moment: give the capacity back
                await settle_now(self.redis, admission, None, None, 0.0)
            raise
        return admission

    async def _admit_group(self, head: _Call, waiting: list[_Call], holding: int) -> int:
        """Admit the head and the front of the calls waiting behind it in one draw, now or not at all;
        at most a full bucket, so that a group never bursts beyond what one call could."""
        plan, provider = self.plan, head.provider
        requests_room = min(plan.global_.requests.capacity, plan.provider(provider).requests.capacity)
        tokens_room = min(plan.global_.tokens.capacity, plan.provider(provider).tokens.capacity)
        calls, tokens = 1, head.estimate
        for member in waiting:
            if member.provider != provider or calls + 1 > requests_room or tokens + member.estimate > tokens_room:
                break
            calls, tokens = calls + 1, tokens + member.estimate
        if calls == 1:
            return -1
        draws = plan.call_draws(provider, tokens, calls)
        verdict = await self._draw(draws, max_take_wait_ms=0, holding=holding - (calls - 1))
        return calls - 1 if verdict.ok else -1

    async def _draw(self, draws: list[Draw], *, max_take_wait_ms: float, holding: int) -> Verdict:
        (raw,) = await self.trips.send(
            lambda trip: self.store.draw_into(
                trip, draws, max_take_wait_ms=max_take_wait_ms, gate=self.gate_id, holding=holding
            )
        )
        if isinstance(raw, Exception):
            raise raw
        return verdict_of(raw)

    def _give_back(self, call: _Call) -> None:
        """A call admitted with a group whose job was cancelled before it could use it."""
        admission = LimitsAdmission(self, call.provider, call.estimate)
        task = asyncio.get_running_loop().create_task(settle_now(self.redis, admission, None, None, 0.0))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)


class TenantReconciler:
    """A RequestObserver: once a request ends, trade the tenant's token reservation (taken by the API at
    admission) for the real usage. A request that failed over is settled by the hop that ends it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self.store = BucketStore(redis)
        self.plan = LimitPlan(settings)

    def on_finished(self, event: Finished, trip: Trip) -> None:
        payload = event.payload
        if event.failed_over or not payload.tenant or payload.kind == "batch":
            return  # batch items never reserved tenant tokens at admission
        # the API estimated against the provider it chose first, whose default budget may differ
        first = payload.attempts[0]["provider"] if payload.attempts else payload.provider
        estimate = estimate_call(payload.call, first, self.settings)
        actual = event.result.usage.total_tokens if event.result is not None else 0
        tokens = self.plan.tenant(payload.tenant).tokens
        self.store.adjust(trip, [Draw(tokens, actual - estimate)])
