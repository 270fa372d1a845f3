"""Provider health: passive figures from real traffic, the monitor's probes, a score and a status.

Every provider call adds to a time-bucketed hash (calls, failures, summed latency) that expires, in
the same pipeline as its breaker update. The health monitor probes each provider and stores the
verdict. `assess` turns both, plus the breaker, into a status:

- unhealthy: breaker open, the monitor's probe failing, or an error rate at or above
  `HEALTH_UNHEALTHY_ERROR_RATE`;
- degraded: error rate above `ALERT_ERROR_RATE` (10%) or mean latency above `ALERT_LATENCY_MS` (5 s);
- healthy otherwise.

Routing avoids a provider whose breaker is open (until its cooldown ends) or whose probe fails. A
high error rate alone does not take a provider out of routing: that is the breaker's job, and its
cooldown and probes bring the provider back sooner than an ageing window would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared import keys
from shared.breaker import BreakerSnapshot, BreakerState
from shared.queue import now_ms as _now_ms
from shared.settings import Settings

log = logging.getLogger(__name__)

WINDOW_BUCKETS = 6


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


def bucket_ms(settings: Settings) -> int:
    return max(int(settings.health_window_s * 1000 / WINDOW_BUCKETS), 1)


def record_call(pipe: Any, provider: str, failed: bool, latency_ms: float, now_ms: int, settings: Settings) -> None:
    """Queue one call's passive figures on a pipeline (the caller executes it)."""
    size = bucket_ms(settings)
    key = keys.health_bucket(provider, now_ms // size)
    pipe.hincrby(key, "n", 1)
    if failed:
        pipe.hincrby(key, "err", 1)
    pipe.hincrby(key, "lat", max(int(latency_ms), 0))
    pipe.pexpire(key, int(settings.health_window_s * 1000) + 2 * size)


@dataclass(frozen=True, slots=True)
class Probe:
    """The monitor's last look at a provider (a models listing)."""

    ok: bool
    latency_ms: float | None
    at_ms: int
    error: str | None = None
    failures: int = 0  # consecutive failed probes

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Probe | None:
        if "at" not in data:
            return None
        latency = data.get("lat")
        return cls(
            ok=data.get("ok") == "1",
            latency_ms=float(latency) if latency else None,
            at_ms=int(data["at"]),
            error=data.get("error") or None,
            failures=int(data.get("fails", 0) or 0),
        )

    def fresh(self, now_ms: int, settings: Settings) -> bool:
        """Recent enough to act on: a probe from a monitor that stopped running says nothing."""
        horizon = 3 * settings.health_check_interval_s + settings.health_probe_timeout_s
        return now_ms - self.at_ms <= horizon * 1000


@dataclass(frozen=True, slots=True)
class Passive:
    """Real traffic over the health window."""

    requests: int = 0
    failures: int = 0
    latency_sum_ms: int = 0

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum_ms / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    status: HealthStatus
    score: int  # 0..100
    latency_ms: float | None
    error_rate: float
    passive: Passive
    breaker: BreakerSnapshot
    probe: Probe | None
    reasons: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """SPEC.md's four figures, plus breaker, score and what they were made of."""
        return {
            "status": self.status.value,
            "latency": round(self.latency_ms) if self.latency_ms is not None else None,
            "successRate": round(1.0 - self.error_rate, 4),
            "errorRate": round(self.error_rate, 4),
            "score": self.score,
            "requests": self.passive.requests,
            "consecutiveFailures": self.breaker.consecutive_failures,
            "breaker": {
                "state": self.breaker.state.value,
                "openUntil": self.breaker.open_until_ms if self.breaker.state is BreakerState.OPEN else None,
            },
            "probe": None
            if self.probe is None
            else {
                "ok": self.probe.ok,
                "latency": round(self.probe.latency_ms) if self.probe.latency_ms is not None else None,
                "at": self.probe.at_ms,
                "error": self.probe.error,
            },
            "reasons": list(self.reasons),
        }


def assess(
    provider: str,
    passive: Passive,
    breaker: BreakerSnapshot,
    probe: Probe | None,
    settings: Settings,
    now_ms: int,
) -> ProviderHealth:
    probe = probe if probe is not None and probe.fresh(now_ms, settings) else None
    judged = passive.requests >= settings.health_min_requests
    error_rate = passive.error_rate if judged else 0.0
    latency = passive.mean_latency_ms
    if latency is None and probe is not None and probe.ok:
        latency = probe.latency_ms
    degraded_ms = settings.alert_latency_ms
    reasons: list[str] = []
    if breaker.state is not BreakerState.CLOSED:
        reasons.append(f"circuit breaker {breaker.state.value}")
    if probe is not None and not probe.ok:
        reasons.append(f"health probe failing ({probe.error or 'error'})")
    if error_rate >= settings.health_unhealthy_error_rate:
        reasons.append(f"error rate {error_rate:.0%}")
    if reasons:
        status = HealthStatus.UNHEALTHY
    else:
        if error_rate > settings.alert_error_rate:
            reasons.append(f"error rate {error_rate:.0%}")
        if latency is not None and latency > degraded_ms:
            reasons.append(f"latency {latency:.0f} ms")
        status = HealthStatus.DEGRADED if reasons else HealthStatus.HEALTHY
    score = _score(error_rate, latency, breaker, probe, settings)
    return ProviderHealth(provider, status, score, latency, error_rate, passive, breaker, probe, tuple(reasons))


def _score(
    error_rate: float, latency: float | None, breaker: BreakerSnapshot, probe: Probe | None, settings: Settings
) -> int:
    """100 for a fast, error-free provider; falls with errors, latency and failures in a row."""
    if breaker.state is BreakerState.OPEN or (probe is not None and not probe.ok):
        return 0
    errors = 1.0 - error_rate
    # half the points are gone at the degraded-latency threshold
    slowness = math.pow(0.5, (latency or 0.0) / settings.alert_latency_ms)
    streak = max(0.0, 1.0 - breaker.consecutive_failures / settings.breaker_failure_threshold)
    half_open = 0.5 if breaker.state is BreakerState.HALF_OPEN else 1.0
    return max(0, min(100, round(100 * errors * slowness * streak * half_open)))


def overall(healths: Iterable[ProviderHealth]) -> HealthStatus:
    """Healthy if every provider is; unhealthy if none can serve; degraded in between."""
    statuses = [h.status for h in healths]
    if not statuses or all(s is HealthStatus.UNHEALTHY for s in statuses):
        return HealthStatus.UNHEALTHY
    if all(s is HealthStatus.HEALTHY for s in statuses):
        return HealthStatus.HEALTHY
    return HealthStatus.DEGRADED


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


async def read_health(
    redis: Redis, providers: Iterable[str], settings: Settings, now_ms: int
) -> dict[str, ProviderHealth]:
    """Every provider's health from Redis in one round trip."""
    names = list(providers)
    size = bucket_ms(settings)
    newest = now_ms // size
    async with redis.pipeline(transaction=False) as pipe:
        for p in names:
            pipe.hgetall(keys.breaker(p))
            pipe.hgetall(keys.health_probe(p))
            for b in range(newest - WINDOW_BUCKETS + 1, newest + 1):
                pipe.hgetall(keys.health_bucket(p, b))
        rows = await pipe.execute()
    out: dict[str, ProviderHealth] = {}
    per = 2 + WINDOW_BUCKETS
    for i, p in enumerate(names):
        chunk = rows[i * per : (i + 1) * per]
        n = err = lat = 0
        for bucket in chunk[2:]:
            data = _text(bucket)
            n += int(data.get("n", 0))
            err += int(data.get("err", 0))
            lat += int(data.get("lat", 0))
        out[p] = assess(
            p,
            Passive(n, err, lat),
            BreakerSnapshot.from_hash(chunk[0]),
            Probe.from_hash(_text(chunk[1])),
            settings,
            now_ms,
        )
    return out


def probe_event(provider: str, ok: bool) -> str:
    return f"health|{provider}|{1 if ok else 0}"


@dataclass
class _Known:
    breaker: BreakerSnapshot = field(default_factory=BreakerSnapshot)
    probe_ok: bool = True


class ProviderStatusView:
    """A process-local picture of which providers to avoid, kept current in the background.

    Subscribes to `keys.health_events()` (breaker moves, probe verdict flips) and re-reads Redis on
    every (re)subscription and every `PROVIDER_VIEW_REFRESH_S`, so asking it costs no round trip.
    `live` is False while the subscription is down: the picture may then be stale.
    """

    def __init__(self, redis: Redis, settings: Settings, providers: Iterable[str]) -> None:
        self.redis = redis
        self.settings = settings
        self.providers = tuple(providers)
        self.known = {p: _Known() for p in self.providers}
        self.live = False
        self.ready = asyncio.Event()  # set once the first picture has been read
        self._events = 0  # events applied so far: a refresh that raced one reads again
        self._task: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._subscribe(), name="provider-view-subscriber")
            self._refresher = asyncio.create_task(self._refresh_periodically(), name="provider-view-refresh")

    async def stop(self) -> None:
        for task in (self._task, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._refresher = None
        self.live = False

    def breaker(self, provider: str) -> BreakerSnapshot:
        known = self.known.get(provider)
        return known.breaker if known else BreakerSnapshot()

    def unavailable(self, now_ms: int) -> frozenset[str]:
        return frozenset(p for p, k in self.known.items() if k.breaker.avoid(now_ms) or not k.probe_ok)

    def apply(self, message: str) -> bool:
        """Update from one event; False if it could not be read (then re-read Redis)."""
        parts = message.split("|")
        try:
            if parts[0] == "breaker" and parts[1] in self.known:
                known = self.known[parts[1]]
                state = BreakerState(parts[2])
                fails = known.breaker.consecutive_failures if state is not BreakerState.CLOSED else 0
                known.breaker = BreakerSnapshot(state, fails, int(parts[3]))
                self._events += 1
                return True
            if parts[0] == "health" and parts[1] in self.known:
                self.known[parts[1]].probe_ok = parts[2] == "1"
                self._events += 1
                return True
        except (IndexError, ValueError):
            pass
        return False

    async def refresh(self, now_ms: int) -> None:
        for _ in range(3):
            seen = self._events
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in self.providers:
                    pipe.hgetall(keys.breaker(p))
                    pipe.hmget(keys.health_probe(p), ["ok", "at"])
                rows = await pipe.execute()
            if self._events == seen:
                break
            # an event arrived while we read: what we read may predate it, so read again
        else:
            return
        for i, p in enumerate(self.providers):
            known = self.known[p]
            known.breaker = BreakerSnapshot.from_hash(rows[2 * i])
            ok, at = rows[2 * i + 1]
            probe = Probe(ok=ok == b"1", latency_ms=None, at_ms=int(at)) if at else None
            known.probe_ok = probe is None or probe.ok or not probe.fresh(now_ms, self.settings)

    async def _subscribe(self) -> None:
        backoff = 0.05
        while True:
            pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.health_events())
                await self.refresh(_now_ms())
                self.live = True
                self.ready.set()
                backoff = 0.05
                async for message in pubsub.listen():
                    if message["type"] == "message" and not self.apply(message["data"].decode()):
                        await self.refresh(_now_ms())
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("provider view lost Redis (%s); reconnecting", type(exc).__name__)
            finally:
                self.live = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.provider_view_refresh_s)
            try:
                await self.refresh(_now_ms())
            except (RedisError, OSError) as exc:
                log.debug("provider view refresh failed (%s)", type(exc).__name__)
