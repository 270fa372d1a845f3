"""The limits guard: every provider call takes a request and its estimated tokens from the shared
buckets (global and its provider's) before it is made, and trades the estimate for the real usage after.

A call that finds no capacity waits for it, without burning a retry or hammering Redis: in each worker
process one gate lets a single coroutine ask Redis at a time while the others queue behind it in FIFO
order; when the script answers "wait N ms", the gate's head sleeps exactly that long and asks again.
So a process asks Redis about once per admitted call, plus once per refill it was beaten to. The head
also tells the script how many calls its gate holds; the API adds those counts up to estimate how long
a new synchronous request would queue (see `api/rate_limits.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import GatewayError
from shared.limits import BucketStore, Draw, LimitPlan
from shared.schemas import ProviderCall, Usage
from shared.settings import Settings
from shared.token_estimate import estimate_call
from workers.guard import Admission
from workers.observer import Finished

log = logging.getLogger(__name__)


class AdmissionGate:
    """One asker at a time per process; the rest wait locally, first come first served."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # wakes its waiters in FIFO order
        self.holding = 0  # calls in the gate, the asker included

    async def enter(self, ask: Callable[[int], Awaitable[float]]) -> None:
        """Return once `ask(holding)` answers 0; sleep exactly as long as it says otherwise (seconds)."""
        self.holding += 1
        try:
            async with self._lock:
                while (wait := await ask(self.holding)) > 0:
                    await asyncio.sleep(wait)
        finally:
            self.holding -= 1


class LimitsAdmission:
    def __init__(self, guard: LimitsGuard, provider: str, estimate: int) -> None:
        self.guard = guard
        self.provider = provider
        self.estimate = estimate

    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        """Replace the estimate by the real usage: refund what was not used, charge what was exceeded.
        A call that failed without usage used no tokens; one never made (an error without a provider,
        as `ChainGuard` settles) gives back its request too."""
        actual = usage.total_tokens if usage is not None else 0
        draws = self.guard.plan.token_draws(self.provider, actual - self.estimate)
        if usage is None and (error is None or error.provider is None):
            plan = self.guard.plan
            draws += [Draw(plan.global_.requests, -1), Draw(plan.provider(self.provider).requests, -1)]
        try:
            await self.guard.store.adjust(draws)
        except (RedisError, OSError) as exc:
            log.warning("could not reconcile tokens for %s (%s)", self.provider, type(exc).__name__)


class _Free:
    """What a call gets when Redis cannot be asked: the limiter fails open rather than stopping traffic."""

    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        return None


class LimitsGuard:
    """The CallGuard of the shared rate limits."""

    def __init__(self, redis: Redis, settings: Settings, gate_id: str) -> None:
        self.settings = settings
        self.store = BucketStore(redis)
        self.plan = LimitPlan(settings)
        self.gate = AdmissionGate()
        self.gate_id = gate_id

    async def admit(self, provider: str, call: ProviderCall) -> Admission:
        estimate = estimate_call(call, provider, self.settings)
        draws = self.plan.call_draws(provider, estimate)

        async def ask(holding: int) -> float:
            verdict = await self.store.draw(draws, gate=self.gate_id, holding=holding)
            return 0.0 if verdict.ok else verdict.take_wait_ms / 1000

        try:
            await self.gate.enter(ask)
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unreachable (%s); letting the call through", type(exc).__name__)
            return _Free()
        return LimitsAdmission(self, provider, estimate)


class TenantReconciler:
    """A RequestObserver: once a request ends, trade the tenant's token reservation (taken by the API at
    admission) for the real usage. A request that failed over is settled by the hop that ends it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self.store = BucketStore(redis)
        self.plan = LimitPlan(settings)

    async def on_finished(self, event: Finished) -> None:
        payload = event.payload
        if event.failed_over or not payload.tenant:
            return
        # the API estimated against the provider it chose first, whose default budget may differ
        first = payload.attempts[0]["provider"] if payload.attempts else payload.provider
        estimate = estimate_call(payload.call, first, self.settings)
        actual = event.result.usage.total_tokens if event.result is not None else 0
        tokens = self.plan.tenant(payload.tenant).tokens
        await self.store.adjust([Draw(tokens, actual - estimate)])
