"""Request metrics shared by every process through Redis: written with one script call, read per period.

Each finished request increments a handful of integer counters (HINCRBY, so many writers add up
exactly) in three hashes at once: its minute bucket (kept 2 hours, serves `period=hour`), its hour
bucket (kept 8 days, serves `day` and `week`) and the cumulative totals that Prometheus scrapes.
Latency is kept as a histogram over fixed log-spaced buckets, so p95 costs no list of latencies.

Counter fields (integers; `|` separates the parts because model names may contain `:`):
- ``g|ok``, ``g|err``, ``g|hit``: requests that ended (once per request, not per failover hop)
- ``g|lat``: their summed latency in microseconds; ``g|cost``: their cost in 1e-10 USD
- ``n|<provider>|<model>|<ok|err|hit>``: outcomes per provider and model (failover hops included)
- ``l|<provider>|<model>``, ``c|<provider>|<model>``: latency and cost sums per provider and model
- ``t|<provider>|<model>|<in|out>``: tokens; ``e|<provider>|<error type>``: errors by type
- ``h|<provider>|<i>``: latency histogram, bucket ``i`` counts latencies in
  ``(LATENCY_BOUNDS_MS[i-1], LATENCY_BOUNDS_MS[i]]``; ``i == len(LATENCY_BOUNDS_MS)`` is the overflow.

Each tenant (the JWT subject) also has its own minute and hour buckets, with the fields its metrics
view reads (all but tokens and errors by type), incremented by the same script call: a user's view
sums only its own, and no round trip is added to any request (the script's Redis CPU for one request
went from 24 to 34 us, measured back to back). A tenant's buckets exist only for the minutes and hours
it sent requests in: at most 120 minute and 192 hour hashes of a few fields each per active tenant.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from redis.asyncio import Redis

from shared import keys
from shared.round_trip import RoundTrip

Outcome = Literal["success", "error", "cache_hit"]
Period = Literal["hour", "day", "week"]

# Four buckets per doubling from 1 ms to ~17 minutes: a quantile read off it is within 19% of the
# truth. Every fourth bound is a power of two, which is what Prometheus is shown.
LATENCY_BOUNDS_MS: Final[tuple[float, ...]] = tuple(2 ** (k / 4) for k in range(81))
PROMETHEUS_BOUND_STEP: Final = 4

COST_UNIT: Final = 10**10  # counters hold cost in 1e-10 USD, the precision of `Cost`
MINUTE_TTL_S: Final = 2 * 3600
HOUR_TTL_S: Final = 8 * 86400
PERIOD_BUCKETS: Final[dict[str, tuple[str, int]]] = {"hour": ("1m", 60), "day": ("1h", 24), "week": ("1h", 168)}
TOP_MODELS: Final = 5
_OUTCOME_CODE: Final[dict[str, str]] = {"success": "ok", "error": "err", "cache_hit": "hit"}

# KEYS: minute bucket, hour bucket, totals, then each tenant's minute and hour buckets. ARGV: minute
# ttl, hour ttl, a JSON array of field/increment pairs, then one such array per tenant (one argument
# each instead of dozens: packing each argument is what costs the client CPU).
RECORD_LUA: Final = """
local incr = cjson.decode(ARGV[3])
for i = 1, #incr, 2 do
  redis.call('HINCRBY', KEYS[1], incr[i], incr[i + 1])
  redis.call('HINCRBY', KEYS[2], incr[i], incr[i + 1])
  redis.call('HINCRBY', KEYS[3], incr[i], incr[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for t = 1, (#KEYS - 3) / 2 do
  local minute, hour = KEYS[2 + 2 * t], KEYS[3 + 2 * t]
  incr = cjson.decode(ARGV[3 + t])
  for i = 1, #incr, 2 do
    redis.call('HINCRBY', minute, incr[i], incr[i + 1])
    redis.call('HINCRBY', hour, incr[i], incr[i + 1])
  end
  redis.call('EXPIRE', minute, ARGV[1])
  redis.call('EXPIRE', hour, ARGV[2])
end
return 1
"""
# The counters a tenant's own view reads (`summarize`): not tokens (t) nor errors by type (e).
TENANT_KINDS: Final = frozenset("gnlch")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request's end as metrics see it.

    ``final`` is False for a hop that failed over to another provider: it counts against its
    provider (error rate, latency) but the request itself is counted once, where it ends.
    """

    provider: str
    model: str
    outcome: Outcome
    latency_ms: float
    cost_usd: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_type: str | None = None
    final: bool = True
    tenant: str | None = None


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def _label(value: str) -> str:
    return value.replace("|", "/") or "unknown"


def increments(record: RequestRecord) -> list[tuple[str, int]]:
    """The counter increments one record makes (the same in every hash it lands in)."""
    p, m = _label(record.provider), _label(record.model)
    code = _OUTCOME_CODE[record.outcome]
    lat_us = max(round(record.latency_ms * 1000), 0)
    cost = round(record.cost_usd * COST_UNIT) if record.cost_usd else 0
    out = [(f"n|{p}|{m}|{code}", 1), (f"l|{p}|{m}", lat_us), (f"h|{p}|{latency_bucket(record.latency_ms)}", 1)]
    if cost:
        out.append((f"c|{p}|{m}", cost))
    if record.prompt_tokens:
        out.append((f"t|{p}|{m}|in", record.prompt_tokens))
    if record.completion_tokens:
        out.append((f"t|{p}|{m}|out", record.completion_tokens))
    if record.error_type:
        out.append((f"e|{p}|{_label(record.error_type)}", 1))
    if record.final:
        out += [(f"g|{code}", 1), ("g|lat", lat_us)]
        if cost:
            out.append(("g|cost", cost))
    return out


def bucket_of(resolution: str, now_s: float) -> int:
    return int(now_s // (60 if resolution == "1m" else 3600))


class Sums:
    """The counter increments of some records, summed: the gateway's, and each tenant's share."""

    def __init__(self) -> None:
        self.gateway: Counter[str] = Counter()
        self.tenants: dict[str, Counter[str]] = {}

    def add(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            fields = increments(record)
            for field, by in fields:
                self.gateway[field] += by
            if record.tenant:
                mine = self.tenants.setdefault(record.tenant, Counter())
                for field, by in fields:
                    if field[0] in TENANT_KINDS:
                        mine[field] += by

    def script_call(self, now_s: float) -> tuple[list[str], list[Any]]:
        """RECORD_LUA's keys and args for these sums, in the buckets of `now_s`."""
        minute, hour = bucket_of("1m", now_s), bucket_of("1h", now_s)
        script_keys = [keys.metrics_bucket("1m", minute), keys.metrics_bucket("1h", hour), keys.metrics_totals()]
        args: list[Any] = [MINUTE_TTL_S, HOUR_TTL_S, _packed(self.gateway)]
        for tenant, sums in self.tenants.items():
            script_keys += [
                keys.metrics_tenant_bucket("1m", minute, tenant),
                keys.metrics_tenant_bucket("1h", hour, tenant),
            ]
            args.append(_packed(sums))
        return script_keys, args


def _packed(sums: Mapping[str, int]) -> bytes:
    flat: list[str] = []
    for field, by in sums.items():
        flat += [field, str(by)]  # strings: Lua would print a big number as 1e+14
    return orjson.dumps(flat)


class _TripCounters:
    """The counters of every request recorded on one round trip, summed: one script call for all."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s
        self.sums = Sums()

    def flush(self, trip: RoundTrip) -> None:
        trip.script(RECORD_LUA, *self.sums.script_call(self.now_s))


def record_into(trip: RoundTrip, records: Iterable[RequestRecord], now_s: float) -> None:
    """Add the records' counters to the round trip's one counters script call (the worker's
    observer sends it with the rest; requests ending together share it)."""
    trip.aggregate("metrics", lambda: _TripCounters(now_s)).sums.add(records)


async def record(redis: Redis, *records: RequestRecord, now_s: float | None = None) -> None:
    """Record requests in a round trip of their own (a failed script raises)."""
    sums = Sums()
    sums.add(records)
    trip = RoundTrip(redis)
    trip.script(RECORD_LUA, *sums.script_call(time.time() if now_s is None else now_s))
    for reply in await trip.send():
        if isinstance(reply, Exception):
            raise reply


async def record_cache_hit(
    redis: Redis,
    provider: str,
    model: str,
    latency_ms: float,
    *,
    tenant: str | None = None,
    now_s: float | None = None,
) -> None:
    """Count a request answered from the cache: a success that cost nothing and called no provider."""
    await record(redis, RequestRecord(provider, model, "cache_hit", latency_ms, tenant=tenant), now_s=now_s)


# -- reading ---------------------------------------------------------------------------------------


def period_keys(period: str, now_s: float, tenant: str | None = None) -> list[str]:
    """The buckets covering `period`: the gateway's, or one tenant's."""
    resolution, count = PERIOD_BUCKETS[period]
    last = bucket_of(resolution, now_s)
    buckets = range(last - count + 1, last + 1)
    if tenant is None:
        return [keys.metrics_bucket(resolution, b) for b in buckets]
    return [keys.metrics_tenant_bucket(resolution, b, tenant) for b in buckets]


async def read_counters(redis: Redis, key_names: list[str]) -> Counter[str]:
    """Sum the hashes `key_names` field by field, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in key_names:
            pipe.hgetall(name)
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    total: Counter[str] = Counter()
    for h in hashes:
        for field, value in h.items():
            total[field.decode()] += int(value)
    return total


def quantile_ms(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of a bucketed latency histogram, interpolated linearly inside its bucket."""
    count = sum(histogram.values())
    if count == 0:
        return None
    rank = q * count
    seen = 0
    for i in sorted(histogram):
        n = histogram[i]
        if n and seen + n >= rank:
            if i >= len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            return lower + (LATENCY_BOUNDS_MS[i] - lower) * max(rank - seen, 0) / n
        seen += n
    return LATENCY_BOUNDS_MS[-1]


@dataclass(slots=True)
class ProviderFigures:
    """One provider's (or every provider's) counters, pulled out of the flat field map."""

    requests: int = 0
    errors: int = 0
    latency_us: int = 0
    cost_units: int = 0
    histogram: Counter[int] | None = None
    models: dict[str, list[int]] | None = None  # model -> [count, latency_us]

    @property
    def average_latency_ms(self) -> float | None:
        return self.latency_us / 1000 / self.requests if self.requests else None


def provider_figures(counters: Mapping[str, int], provider: str | None) -> ProviderFigures:
    """Figures for `provider`, or summed over all providers when it is None."""
    figures = ProviderFigures(histogram=Counter(), models={})
    assert figures.histogram is not None and figures.models is not None
    for field, value in counters.items():
        kind, _, rest = field.partition("|")
        if kind == "g" or kind == "t" or kind == "e":
            continue
        p, _, rest = rest.partition("|")
        if provider is not None and p != provider:
            continue
        if kind == "n":
            model, _, code = rest.rpartition("|")
            figures.requests += value
            if code == "err":
                figures.errors += value
            figures.models.setdefault(model, [0, 0])[0] += value
        elif kind == "l":
            figures.latency_us += value
            figures.models.setdefault(rest, [0, 0])[1] += value
        elif kind == "c":
            figures.cost_units += value
        elif kind == "h":
            figures.histogram[int(rest)] += value
    return figures


def _ms(value: float | None) -> float:
    return round(value, 2) if value is not None else 0


def _usd(units: int) -> float:
    return round(units / COST_UNIT, 6)


def summarize(counters: Mapping[str, int], provider: str | None, uptime_s: float) -> dict[str, Any]:
    """SPEC.md's metrics `data`: the gateway's requests, and one provider's (or all) performance."""
    ok, err, hit = counters.get("g|ok", 0), counters.get("g|err", 0), counters.get("g|hit", 0)
    total = ok + err + hit
    figures = provider_figures(counters, provider)
    assert figures.models is not None and figures.histogram is not None
    ranked = sorted(figures.models.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_MODELS]
    return {
        "gateway": {
            "totalRequests": total,
            "successfulRequests": ok + hit,
            "failedRequests": err,
            "averageLatency": _ms(counters.get("g|lat", 0) / 1000 / total if total else None),
            "totalCost": _usd(counters.get("g|cost", 0)),
            "uptime": int(uptime_s),
        },
        "performance": {
            "provider": provider,
            "totalRequests": figures.requests,
            "averageLatency": _ms(figures.average_latency_ms),
            "p95Latency": _ms(quantile_ms(figures.histogram, 0.95)),
            "totalCost": _usd(figures.cost_units),
            "topModels": [
                {"model": model, "count": count, "avgLatency": _ms(lat / 1000 / count if count else None)}
                for model, (count, lat) in ranked
                if count
            ],
        },
    }


async def period_summary(
    redis: Redis,
    period: str,
    provider: str | None,
    uptime_s: float,
    now_s: float | None = None,
    *,
    tenant: str | None = None,
) -> dict[str, Any]:
    """SPEC.md's metrics over `period`: the whole gateway's, or only `tenant`'s requests."""
    now = time.time() if now_s is None else now_s
    counters = await read_counters(redis, period_keys(period, now, tenant))
    return summarize(counters, provider, uptime_s)


def histogram_from(counters: Mapping[str, int], provider: str) -> dict[int, int]:
    prefix = f"h|{provider}|"
    return {int(f[len(prefix) :]): v for f, v in counters.items() if f.startswith(prefix)}


def window_keys(window_s: float, now_s: float) -> list[str]:
    """The minute buckets covering the last `window_s` seconds (the current, partial one included)."""
    last = bucket_of("1m", now_s)
    count = max(math.ceil(window_s / 60), 1)
    return [keys.metrics_bucket("1m", b) for b in range(last - count + 1, last + 1)]
