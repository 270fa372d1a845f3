"""The one step before every provider call: limits and breakers plug in here."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from plumbing.interfaces import Trip
from plumbing.round_trip import RoundTrip
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, Usage


class Admission(Protocol):
    """A permission to make one provider call, settled once the call ends."""

    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        """Queue the call's bookkeeping on `trip`; whoever ends the call sends it (one round trip for all)."""
        ...


class CallGuard(Protocol):
    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Admission:
        """Wait for capacity and the breaker's leave, or raise a typed GatewayError. Calls waiting in
        one process are let through by `priority` (lower first: see `shared.schemas.KIND_PRIORITY`).
        `prepaid`: the call's limits were drawn already (by the enqueue that handed its job over)."""
        ...


async def settle_now(
    redis: Redis, admission: Admission, usage: Usage | None, error: GatewayError | None, latency_ms: float
) -> None:
    """Settle one admission in a round trip of its own (a failure, which must count before any retry)."""
    trip = RoundTrip(redis)
    admission.settle(trip, usage, error, latency_ms)
    await trip.send_or_log("a call's outcome")


class _Open:
    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        return None


class OpenGuard:
    """Admits everything: the guard to use where no limits apply."""

    _admission = _Open()

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Admission:
        return self._admission


class _Chained:
    __slots__ = ("admissions",)

    def __init__(self, admissions: list[Admission]) -> None:
        self.admissions = admissions

    def settle(self, trip: Trip, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        for admission in reversed(self.admissions):
            admission.settle(trip, usage, error, latency_ms)


class ChainGuard:
    """Admits through several guards in order (the breaker first, then the limits). If a later guard
    refuses, the earlier admissions are settled with its error, or with a provider-less error when the
    wait was cancelled or the refusal names a provider: an error without a provider means the call was
    never made. A prepaid call asks the guards last-first: the prepaid ones admit at once, and a
    refusal by another gives their capacity back like any earlier admission."""

    def __init__(self, redis: Redis, *guards: CallGuard) -> None:
        self.redis = redis
        self.guards = guards

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1, prepaid: bool = False) -> Admission:
        admitted: list[Admission] = []
        try:
            for guard in reversed(self.guards) if prepaid else self.guards:
                admitted.append(await guard.admit(provider, call, priority=priority, prepaid=prepaid))
        except BaseException as exc:
            err = exc if isinstance(exc, GatewayError) and exc.provider is None else _not_made(provider)
            if admitted:
                await settle_now(self.redis, _Chained(admitted), None, err, 0.0)
            raise
        return admitted[0] if len(admitted) == 1 else _Chained(admitted)


def _not_made(provider: str) -> GatewayError:
    return GatewayError(ErrorType.CANCELLED, f"the call to {provider} was not made", retryable=False)
