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
- ``g|can``: streamed requests whose client went away (the upstream call was stopped)
- ``h|<provider>|<i>``: latency histogram, bucket ``i`` counts latencies in
  ``(LATENCY_BOUNDS_MS[i-1], LATENCY_BOUNDS_MS[i]]``; ``i == len(LATENCY_BOUNDS_MS)`` is the overflow.
- ``f|<provider>|<i>``: streamed calls' time to first token (the provider's first delta), bucketed
  as the latency histogram; ``fs|<provider>``: its sum in microseconds.
- ``x|<provider>`` (totals only): jobs a worker gave up because it no longer held them when it came
  back from a pause past its lease: another worker had retaken them, or ended them (fenced: no
  outcome stored, no provider call made again)

Model names come from callers (a provider that accepts any name answers with it), and each one would
add fields to every hash above and series to Prometheus' `/metrics`. So a model has a label of its
own only when it is in the known catalogue (``ModelLabels``: the price tables and the configured
model names, exact spellings) or among the first ``METRICS_MAX_MODELS`` other names per provider to
succeed; the rest count as ``other``. That bounded set lives in Redis (``keys.metrics_models``) so
every process agrees, and the counters' script itself admits a name, atomically, on the call that
counts it: no extra round trip. Provider names and error types are the gateway's own (bounded).
An admitted name stays admitted, as the totals it wrote stay: a model that must have its own label
whatever the cap belongs in the configuration (`PRICE_OVERRIDES` or the failover map).

Each tenant (the JWT subject) also has its own minute and hour buckets, with the fields its metrics
view reads (all but tokens and errors by type), incremented by the same script call with the labels
the gateway's counters got: a user's view sums only its own, and no round trip is added to any
request. A tenant's buckets exist only for the minutes and hours it sent requests in: at most 120
minute and 192 hour hashes of a few fields each per active tenant. The gateway's minute and hour
buckets (not the totals) also hold ``u|<tenant>``, each tenant's cost in them, so spend by tenant is
read off the buckets without knowing the tenants beforehand.

``r|<error type>``: requests the API refused itself (429 at admission, 4xx for the body or the
token), which no worker sees; the API process sums them and sends them every second
(``record_refusals``, api/refusals.py), into the gateway's buckets and the refused tenant's.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from redis.asyncio import Redis

from plumbing.interfaces import Trip
from plumbing.round_trip import RoundTrip
from shared import keys, scripts
from shared.pricing import catalogue_models

if TYPE_CHECKING:
    from shared.settings import Settings

Outcome = Literal["success", "error", "cache_hit", "cancelled"]
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
_OUTCOME_CODE: Final[dict[str, str]] = {"success": "ok", "error": "err", "cache_hit": "hit", "cancelled": "can"}
OTHER_MODEL: Final = "other"
DEFAULT_MAX_MODELS: Final = 100
_MAX_MODEL_CHARS: Final = 128  # as a request's `model`; a longer name from a provider is `other`

# The counters a tenant's own view reads (`summarize`): not tokens (t) nor errors by type (e).
TENANT_KINDS: Final = frozenset("gnlchf")


class ModelLabels:
    """Which model names are counted under their own name without asking Redis.

    ``known`` is the catalogue (exact spellings: "GPT-4" is not "gpt-4", or a caller could spell
    one name many ways); any other name goes to the counters' script, which admits the first
    ``max_models`` per provider that succeed and folds the rest into ``other``.
    """

    def __init__(self, known: frozenset[str], max_models: int = DEFAULT_MAX_MODELS) -> None:
        self.known = known
        self.max_models = max_models


@lru_cache(maxsize=1)
def default_model_labels() -> ModelLabels:
    """The catalogue without configuration (price tables only): for callers that pass none."""
    return ModelLabels(catalogue_models())


_labels_of: tuple[Settings, ModelLabels] | None = None


def model_labels(settings: Settings) -> ModelLabels:
    """The catalogue of this configuration: the price tables plus every model name configured (the
    default models, the failover map, price overrides). Remembered for the last settings object,
    which every process keeps for its lifetime."""
    global _labels_of
    if _labels_of is None or _labels_of[0] is not settings:
        known = catalogue_models() | settings.configured_models() | set(settings.price_overrides)
        _labels_of = (settings, ModelLabels(frozenset(known), settings.metrics_max_models))
    return _labels_of[1]


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
    ttft_ms: float | None = None  # a streamed call's time to first token


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def _label(value: str) -> str:
    return value.replace("|", "/") or "unknown"


def _cost_units(record: RequestRecord) -> int:
    return round(record.cost_usd * COST_UNIT) if record.cost_usd else 0


def _latency_us(record: RequestRecord) -> int:
    return max(round(record.latency_ms * 1000), 0)


def _model_increments(record: RequestRecord) -> list[tuple[str, str, int]]:
    """The counters one record makes per provider and model: (kind, suffix, increment), counted
    under ``kind|provider|model<suffix>``."""
    cost = _cost_units(record)
    out = [("n", f"|{_OUTCOME_CODE[record.outcome]}", 1), ("l", "", _latency_us(record))]
    if cost:
        out.append(("c", "", cost))
    if record.prompt_tokens:
        out.append(("t", "|in", record.prompt_tokens))
    if record.completion_tokens:
        out.append(("t", "|out", record.completion_tokens))
    return out


def _other_increments(record: RequestRecord) -> list[tuple[str, int]]:
    """The counters one record makes that name no model: the histogram, errors, the gateway's."""
    p = _label(record.provider)
    code = _OUTCOME_CODE[record.outcome]
    lat_us = _latency_us(record)
    out = [(f"h|{p}|{latency_bucket(record.latency_ms)}", 1)]
    if record.ttft_ms is not None:
        out += [(f"f|{p}|{latency_bucket(record.ttft_ms)}", 1), (f"fs|{p}", max(round(record.ttft_ms * 1000), 0))]
    if record.error_type:
        out.append((f"e|{p}|{_label(record.error_type)}", 1))
    if record.final:
        out += [(f"g|{code}", 1), ("g|lat", lat_us)]
        cost = _cost_units(record)
        if cost:
            out.append(("g|cost", cost))
    return out


def bucket_of(resolution: str, now_s: float) -> int:
    return int(now_s // (60 if resolution == "1m" else 3600))


class _Sums:
    """Counter increments summed: those of catalogue models (and models' fields) by field, those of
    other models by (provider, model), for the script to admit or fold into `other`."""

    def __init__(self) -> None:
        self.fields: Counter[str] = Counter()
        # (provider, model) -> {(kind, suffix): increment}
        self.guarded: dict[tuple[str, str], Counter[tuple[str, str]]] = {}

    def cost_units(self) -> int:
        return self.fields.get("g|cost", 0)

    def flat(self) -> list[str]:
        out: list[str] = []
        for field, by in self.fields.items():
            out += [field, str(by)]  # strings: Lua would print a big number as 1e+14
        return out

    def groups(self, admit: set[tuple[str, str]] | None) -> list[list[Any]]:
        """The guarded models' counters, each `[provider, model, (admit,) kind, suffix, increment, ...]`."""
        groups: list[list[Any]] = []
        for (p, m), sums in self.guarded.items():
            group: list[Any] = [p, m] if admit is None else [p, m, 1 if (p, m) in admit else 0]
            for (kind, suffix), by in sums.items():
                group += [kind, suffix, str(by)]
            groups.append(group)
        return groups


class _Counters:
    """Records' counters summed for one script call: the gateway's, and each tenant's share."""

    def __init__(self, labels: ModelLabels) -> None:
        self.labels = labels
        self.gateway = _Sums()
        self.tenants: dict[str, _Sums] = {}
        self.admit: set[tuple[str, str]] = set()  # the guarded models a record may admit

    def add(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            mine = self.tenants.setdefault(record.tenant, _Sums()) if record.tenant else None
            for field, by in _other_increments(record):
                self.gateway.fields[field] += by
                if mine is not None and field[0] in TENANT_KINDS:
                    mine.fields[field] += by
            p, m = _label(record.provider), _label(record.model)
            if len(m) > _MAX_MODEL_CHARS:
                m = OTHER_MODEL
            increments = _model_increments(record)
            if m in self.labels.known or m == OTHER_MODEL:
                for kind, suffix, by in increments:
                    self.gateway.fields[f"{kind}|{p}|{m}{suffix}"] += by
                    if mine is not None and kind in TENANT_KINDS:
                        mine.fields[f"{kind}|{p}|{m}{suffix}"] += by
                continue
            sums = self.gateway.guarded.setdefault((p, m), Counter())
            for kind, suffix, by in increments:
                sums[(kind, suffix)] += by
            if mine is not None:
                tsums = mine.guarded.setdefault((p, m), Counter())
                for kind, suffix, by in increments:
                    if kind in TENANT_KINDS:
                        tsums[(kind, suffix)] += by
            # only a success admits a name: a provider that refused the name proved nothing, and a
            # cache hit repeats an earlier success (admitted then, if there was room)
            if record.outcome == "success":
                self.admit.add((p, m))

    def script_call(self, now_s: float) -> tuple[list[str], list[Any]]:
        """metrics_record.lua's keys and args for these sums, in the buckets of `now_s`."""
        minute, hour = bucket_of("1m", now_s), bucket_of("1h", now_s)
        return scripts.metrics_record(
            minute=keys.metrics_bucket("1m", minute),
            hour=keys.metrics_bucket("1h", hour),
            totals=keys.metrics_totals(),
            models=keys.metrics_models(),
            minute_ttl_s=MINUTE_TTL_S,
            hour_ttl_s=HOUR_TTL_S,
            increments=orjson.dumps(self.gateway.flat()),
            max_models=self.labels.max_models,
            groups=orjson.dumps(self.gateway.groups(self.admit)),
            tenants=[
                (
                    keys.metrics_tenant_bucket("1m", minute, tenant),
                    keys.metrics_tenant_bucket("1h", hour, tenant),
                    orjson.dumps([sums.flat(), sums.groups(None), f"u|{_label(tenant)}", str(sums.cost_units())]),
                )
                for tenant, sums in self.tenants.items()
            ],
        )


class _TripCounters(_Counters):
    """The counters of every request recorded on one round trip, summed: one script call for all."""

    def __init__(self, now_s: float, labels: ModelLabels) -> None:
        super().__init__(labels)
        self.now_s = now_s

    def flush(self, trip: Trip) -> None:
        trip.script(scripts.METRICS_RECORD.source, *self.script_call(self.now_s))


def count_fenced_into(trip: Trip, provider: str) -> None:
    """Count a job given up by a fenced worker (see workers/job_lease.py)."""
    trip.pipe.hincrby(keys.metrics_totals(), f"x|{provider}", 1)


def record_into(trip: Trip, records: Iterable[RequestRecord], now_s: float, labels: ModelLabels | None = None) -> None:
    """Add the records' counters to the round trip's one counters script call (the worker's
    observer sends it with the rest; requests ending together share it)."""
    trip.aggregate("metrics", lambda: _TripCounters(now_s, labels or default_model_labels())).add(records)


async def record(
    redis: Redis, *records: RequestRecord, now_s: float | None = None, labels: ModelLabels | None = None
) -> None:
    """Record requests in a round trip of their own (a failed script raises)."""
    counters = _Counters(labels or default_model_labels())
    counters.add(records)
    trip = RoundTrip(redis)
    trip.script(scripts.METRICS_RECORD.source, *counters.script_call(time.time() if now_s is None else now_s))
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
    labels: ModelLabels | None = None,
) -> None:
    """Count a request answered from the cache: a success that cost nothing and called no provider."""
    hit = RequestRecord(provider, model, "cache_hit", latency_ms, tenant=tenant)
    await record(redis, hit, now_s=now_s, labels=labels)


async def record_refusals(redis: Redis, refused: Mapping[tuple[str | None, str], int], now_s: float) -> None:
    """Count requests the API refused itself, `(tenant or None, error type) -> count`, in one script call."""
    counters = _Counters(default_model_labels())
    for (tenant, error_type), count in refused.items():
        field = f"r|{_label(error_type)}"
        counters.gateway.fields[field] += count
        if tenant is not None:
            counters.tenants.setdefault(tenant, _Sums()).fields[field] += count
    trip = RoundTrip(redis)
    trip.script(scripts.METRICS_RECORD.source, *counters.script_call(now_s))
    for reply in await trip.send():
        if isinstance(reply, Exception):
            raise reply


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
    ttft: Counter[int] | None = None  # time-to-first-token histogram

    @property
    def average_latency_ms(self) -> float | None:
        return self.latency_us / 1000 / self.requests if self.requests else None


def provider_figures(counters: Mapping[str, int], provider: str | None) -> ProviderFigures:
    """Figures for `provider`, or summed over all providers when it is None."""
    figures = ProviderFigures(histogram=Counter(), models={}, ttft=Counter())
    assert figures.histogram is not None and figures.models is not None and figures.ttft is not None
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
        elif kind == "f":
            figures.ttft[int(rest)] += value
    return figures


def _ms(value: float | None) -> float:
    return round(value, 2) if value is not None else 0


def _usd(units: int) -> float:
    return round(units / COST_UNIT, 6)


def summarize(counters: Mapping[str, int], provider: str | None, uptime_s: float) -> dict[str, Any]:
    """SPEC.md's metrics `data`: the gateway's requests, and one provider's (or all) performance."""
    ok, err, hit = counters.get("g|ok", 0), counters.get("g|err", 0), counters.get("g|hit", 0)
    cancelled = counters.get("g|can", 0)
    total = ok + err + hit + cancelled
    figures = provider_figures(counters, provider)
    assert figures.models is not None and figures.histogram is not None and figures.ttft is not None
    ranked = sorted(figures.models.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_MODELS]
    return {
        "gateway": {
            "totalRequests": total,
            "successfulRequests": ok + hit,
            "failedRequests": err,
            "cancelledRequests": cancelled,
            "averageLatency": _ms(counters.get("g|lat", 0) / 1000 / total if total else None),
            "totalCost": _usd(counters.get("g|cost", 0)),
            "uptime": int(uptime_s),
        },
        "performance": {
            "provider": provider,
            "totalRequests": figures.requests,
            "averageLatency": _ms(figures.average_latency_ms),
            "p95Latency": _ms(quantile_ms(figures.histogram, 0.95)),
            "streamedRequests": sum(figures.ttft.values()),
            "p50Ttft": _ms(quantile_ms(figures.ttft, 0.5)),
            "p95Ttft": _ms(quantile_ms(figures.ttft, 0.95)),
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
