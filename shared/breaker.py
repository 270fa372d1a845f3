"""One circuit breaker per provider, kept in Redis so every worker and API process shares it.

CLOSED lets calls through and counts provider-side failures: N in a row, or an error rate over a
rolling window (with a minimum number of calls), opens it. OPEN refuses calls for a cooldown. Then
the first caller moves it to HALF_OPEN, which grants a fixed number of probe calls across all
processes (the grant is one atomic script); a probe's success closes the breaker, its failure
reopens it. A probe that never reports (its worker died) reopens the breaker after a timeout.

Every move is published on `keys.health_events()` as `breaker|<provider>|<state>|<open-until ms>`,
so processes can keep a local view and skip Redis while a breaker is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from redis.asyncio import Redis

from plumbing.interfaces import Trip
from shared import keys, scripts
from shared.errors import ErrorType, GatewayError
from shared.settings import Settings

WINDOW_BUCKETS = 10
Verdict = Literal["ok", "fail", "neutral"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(GatewayError):
    """The breaker refused the call: no provider was called, so fail over at once (no retry, no backoff)."""

    fail_fast = True

    def __init__(self, provider: str, state: BreakerState, retry_in_s: float) -> None:
        what = "open" if state is BreakerState.OPEN else "half-open and its probe calls are taken"
        super().__init__(
            ErrorType.SERVICE_UNAVAILABLE,
            f"{provider} is temporarily disabled: its circuit breaker is {what}",
            retryable=True,
            provider=provider,
            retry_after=round(retry_in_s, 3),
        )


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int
    error_rate: float
    window_ms: int
    min_requests: int
    cooldown_ms: int
    probes: int
    probe_timeout_ms: int

    @classmethod
    def from_settings(cls, s: Settings) -> BreakerConfig:
        probe_timeout = s.breaker_probe_timeout_s or (s.provider_connect_timeout_s + s.provider_read_timeout_s)
        return cls(
            failure_threshold=s.breaker_failure_threshold,
            error_rate=s.breaker_error_rate,
            window_ms=max(int(s.breaker_window_s * 1000), WINDOW_BUCKETS),
            min_requests=s.breaker_min_requests,
            cooldown_ms=int(s.breaker_cooldown_s * 1000),
            probes=s.breaker_half_open_probes,
            probe_timeout_ms=int(probe_timeout * 1000),
        )


@dataclass(frozen=True, slots=True)
class Permit:
    """The breaker's answer to one call: let through (maybe as a half-open probe), or refused."""

    allowed: bool
    state: BreakerState
    probe_gen: int = 0  # the half-open generation this probe belongs to; 0 = not a probe
    retry_in_ms: int = 0


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    # open: when the cooldown ends; half-open: when probes that have not reported count as lost
    open_until_ms: int = 0

    def refuses(self, now_ms: int) -> bool:
        """Open and still cooling down: every call would be refused."""
        return self.state is BreakerState.OPEN and now_ms < self.open_until_ms

    def avoid(self, now_ms: int) -> bool:
        """Route around it: refusing, or half-open with its probes under way. Once the cooldown
        is over, traffic goes back so that a request can become the probe."""
        return self.state is not BreakerState.CLOSED and now_ms < self.open_until_ms

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> BreakerSnapshot:
        data = {_text(k): _text(v) for k, v in raw.items()}
        try:
            state = BreakerState(data.get("st", "closed"))
        except ValueError:
            state = BreakerState.CLOSED
        return cls(state, int(data.get("fails", 0) or 0), int(data.get("until", 0) or 0))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def event_message(provider: str, state: BreakerState, open_until_ms: int) -> str:
    return f"breaker|{provider}|{state.value}|{open_until_ms}"


def counts_against(error: GatewayError | None) -> Verdict:
    """How a call's outcome weighs on the breaker. Only provider-side, retryable failures count;
    bad input (400), auth errors and rate limits (handled by backoff and the limiter) do not."""
    if error is None:
        return "ok"
    if isinstance(error, BreakerOpen):
        return "neutral"  # no call was made
    if error.provider is not None and error.retryable and error.type is not ErrorType.RATE_LIMIT:
        return "fail"
    return "neutral"


class CircuitBreakers:
    """The breakers of all providers, over one Redis connection pool."""

    def __init__(self, redis: Redis, config: BreakerConfig) -> None:
        self.redis = redis
        self.config = config
        self._acquire = redis.register_script(scripts.BREAKER_ACQUIRE.source)
        self._record = redis.register_script(scripts.BREAKER_RECORD.source)

    async def acquire(self, provider: str, now_ms: int) -> Permit:
        c = self.config
        verdict, retry_in, gen = await self._acquire(
            *scripts.breaker_acquire(
                breaker=keys.breaker(provider),
                now_ms=now_ms,
                probes=c.probes,
                probe_timeout_ms=c.probe_timeout_ms,
                channel=keys.health_events(),
                provider=provider,
                cooldown_ms=c.cooldown_ms,
            )
        )
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if name == "closed":
            return Permit(True, BreakerState.CLOSED)
        if name == "probe":
            return Permit(True, BreakerState.HALF_OPEN, probe_gen=int(gen))
        return Permit(False, BreakerState(name), retry_in_ms=int(retry_in))

    async def record(self, provider: str, verdict: Verdict, now_ms: int, *, probe_gen: int = 0) -> None:
        """Count one call's outcome now (workers queue it on their round trip: `record_into`)."""
        await self._record(*self._record_call(provider, verdict, now_ms, probe_gen))

    def record_into(self, trip: Trip, provider: str, verdict: Verdict, now_ms: int, *, probe_gen: int = 0) -> None:
        trip.script(self._record, *self._record_call(provider, verdict, now_ms, probe_gen))

    def _record_call(self, provider: str, verdict: Verdict, now_ms: int, probe_gen: int) -> scripts.KeysAndArgs:
        c = self.config
        return scripts.breaker_record(
            breaker=keys.breaker(provider),
            window=keys.breaker_window(provider),
            now_ms=now_ms,
            verdict=verdict,
            probe_gen=probe_gen,
            channel=keys.health_events(),
            provider=provider,
            cooldown_ms=c.cooldown_ms,
            failure_threshold=c.failure_threshold,
            error_rate=c.error_rate,
            min_requests=c.min_requests,
            window_ms=c.window_ms,
            buckets=WINDOW_BUCKETS,
        )

    async def snapshot(self, provider: str) -> BreakerSnapshot:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.breaker(provider))  # type: ignore[misc]
        return BreakerSnapshot.from_hash(raw)

    async def reset(self, provider: str) -> None:
        """Close a breaker by hand and forget its window (operators, tests)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.breaker(provider), keys.breaker_window(provider))
            pipe.publish(keys.health_events(), event_message(provider, BreakerState.CLOSED, 0))
            await pipe.execute()


def reset_sync(client: Any, providers: tuple[str, ...] = ("openai", "anthropic")) -> None:
    """`CircuitBreakers.reset` for a synchronous redis client: what a test fixture calls between tests."""
    for provider in providers:
        client.delete(keys.breaker(provider), keys.breaker_window(provider))
        client.publish(keys.health_events(), event_message(provider, BreakerState.CLOSED, 0))
