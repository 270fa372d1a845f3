"""The breaker's part of the CallGuard: refuse calls to a provider whose breaker is open, count outcomes.

`admit` costs no Redis round trip while the local view (kept current by pub/sub) says the breaker
is closed, and none either while it is open and cooling down; only then does it refuse at once, with
a `BreakerOpen` that makes the processor fail over without retrying. In between (cooldown over,
half-open) it asks the breaker's atomic script, which grants the bounded probe calls.

`settle` queues the breaker verdict and the passive health figures on the call's round trip.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from plumbing.interfaces import Trip
from shared.breaker import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    CircuitBreakers,
    Permit,
    counts_against,
)
from shared.errors import GatewayError
from shared.health import ProviderStatusView, record_call
from shared.queue import now_ms
from shared.schemas import ProviderCall, Usage
from shared.settings import Settings
from workers.guard import Admission

log = logging.getLogger(__name__)

_CLOSED = Permit(True, BreakerState.CLOSED)


class _BreakerAdmission:
    __slots__ = ("guard", "permit", "provider")

    def __init__(self, guard: BreakerGuard, provider: str, permit: Permit) -> None:
        self.guard = guard
        self.provider = provider
        self.permit = permit

    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        self.guard.record(trip, self.provider, self.permit, error, latency_ms)


class BreakerGuard:
    def __init__(self, redis: Redis, settings: Settings, view: ProviderStatusView | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.view = view
        self.breakers = CircuitBreakers(redis, BreakerConfig.from_settings(settings))

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Admission:
        if not self.settings.breaker_enabled:
            return _BreakerAdmission(self, provider, _CLOSED)
        now = now_ms()
        if self.view is not None and self.view.live:
            known = self.view.breaker(provider)
            if known.state is BreakerState.CLOSED:
                return _BreakerAdmission(self, provider, _CLOSED)
            if known.refuses(now):
                raise BreakerOpen(provider, BreakerState.OPEN, (known.open_until_ms - now) / 1000)
        try:
            permit = await self.breakers.acquire(provider, now)
        except (RedisError, OSError) as exc:
            # no shared breaker without Redis: let the call through rather than fail every request
            log.warning("breaker of %s unreachable (%s); letting the call through", provider, type(exc).__name__)
            return _BreakerAdmission(self, provider, _CLOSED)
        if not permit.allowed:
            raise BreakerOpen(provider, permit.state, permit.retry_in_ms / 1000)
        return _BreakerAdmission(self, provider, permit)

    def record(self, trip: Trip, provider: str, permit: Permit, error: GatewayError | None, latency_ms: float) -> None:
        """Queue the breaker's verdict and the passive health figures of one call on `trip`."""
        verdict = counts_against(error)
        provider_answered = error is None or (error.provider is not None and not isinstance(error, BreakerOpen))
        if not provider_answered and not permit.probe_gen:
            return  # refused before any provider call (a limit, say): nothing to count
        now = now_ms()
        if self.settings.breaker_enabled:
            self.breakers.record_into(trip, provider, verdict, now, probe_gen=permit.probe_gen)
        if provider_answered:
            record_call(trip.pipe, provider, verdict == "fail", latency_ms, now, self.settings)
