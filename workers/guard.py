"""The one step before every provider call: limits and breakers plug in here."""

from __future__ import annotations

from typing import Protocol

from shared.errors import GatewayError
from shared.schemas import ProviderCall, Usage


class Admission(Protocol):
    """A permission to make one provider call, settled once the call ends."""

    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None: ...


class CallGuard(Protocol):
    async def admit(self, provider: str, call: ProviderCall) -> Admission:
        """Wait for capacity and the breaker's leave, or raise a typed GatewayError."""
        ...


class _Open:
    async def settle(self, usage: Usage | None, error: GatewayError | None, latency_ms: float) -> None:
        return None


class OpenGuard:
    """Admits everything: the guard to use where no limits apply."""

    _admission = _Open()

    async def admit(self, provider: str, call: ProviderCall) -> Admission:
        return self._admission
