"""The one step before every provider call: limits and breakers plug in here."""

from __future__ import annotations

from typing import Protocol

from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, Usage


class Admission(Protocol):
    """A permission to make one provider call, settled once the call ends."""

    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None: ...


class CallGuard(Protocol):
    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1) -> Admission:
        """Wait for capacity and the breaker's leave, or raise a typed GatewayError. Calls waiting in
        one process are let through by `priority` (lower first: see `shared.schemas.KIND_PRIORITY`)."""
        ...


class _Open:
    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        return None


class OpenGuard:
    """Admits everything: the guard to use where no limits apply."""

    _admission = _Open()

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1) -> Admission:
        return self._admission


class _Chained:
    __slots__ = ("admissions",)

    def __init__(self, admissions: list[Admission]) -> None:
        self.admissions = admissions

    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        for admission in reversed(self.admissions):
            await admission.settle(usage, error, latency_ms)


class ChainGuard:
    """Admits through several guards in order (the breaker first, then the limits). If a later guard
    refuses, the earlier admissions are settled with its error, or with a provider-less error when the
    wait was cancelled: an error without a provider means the call was never made."""

    def __init__(self, *guards: CallGuard) -> None:
        self.guards = guards

    async def admit(self, provider: str, call: ProviderCall, *, priority: int = 1) -> Admission:
        admitted: list[Admission] = []
        try:
            for guard in self.guards:
                admitted.append(await guard.admit(provider, call, priority=priority))
        except BaseException as exc:
            err = exc if isinstance(exc, GatewayError) else _not_made(provider)
            for admission in reversed(admitted):
                await admission.settle(None, err, 0.0)
            raise
        return admitted[0] if len(admitted) == 1 else _Chained(admitted)


def _not_made(provider: str) -> GatewayError:
    return GatewayError(ErrorType.CANCELLED, f"the call to {provider} was not made", retryable=False)
