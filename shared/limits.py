"""Distributed token buckets: one Lua script refills, checks and takes from every bucket a request
touches, in one round trip, on Redis's clock (`TIME`), so every process on every machine agrees.

A bucket is a hash `{v: level, t: last update in ms}`. Its level refills continuously at `rate` per ms
up to `capacity`; a missing bucket is full, and a bucket expires once it would be full again, so idle
limits hold no memory. All buckets share the `{rl}` hash tag, so the script runs on Redis Cluster.
The script is `shared/lua/limits_draw.lua`; its `draw` function (`shared/lua/lib/draw.lua`) is also
included by the admission's enqueue (`queue_admit_enqueue.lua`).

Each bucket takes part in a draw in one of four modes:
- `t`  take: the bucket must hold the cost within `max_take_wait_ms` (a cost above capacity waits for a
       full bucket). Then it is taken at once: with a wait, that is a reservation that leaves the bucket
       in debt until the answered moment. Otherwise nothing is taken anywhere and the wait is answered;
- `tw` take, and record how many calls the asking gate still holds (`w:<gate>` = `count:expiry ms`);
- `p`  peek: not taken from; the wait until it could serve the cost (at most its capacity, as a take
       would) must be within `max_peek_wait_ms`;
- `pw` peek behind the waiters every gate reported: how long one more request would queue.
A charge or a refund (reconciling an estimate with real usage) is a take with an unbounded wait and a
signed cost; a refund never lifts a bucket above its capacity.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypedDict, Unpack, cast

from redis.asyncio import Redis

from plumbing.interfaces import Trip
from shared import keys, scripts
from shared.settings import Settings

Mode = Literal["t", "tw", "p", "pw"]
Status = Literal["ok", "take", "peek", "backlog"]  # backlog: queue_admit_enqueue.lua's bound on waiting jobs
UNBOUNDED_MS = 1e300
REPORT_GRACE_MS = 2000  # a gate's waiter count outlives its next expected ask by this much


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit: `per_minute` units refill continuously; a full bucket holds `capacity`."""

    key: str
    per_minute: float
    capacity: float
    # its rate and capacity as a draw's arguments, written once (`draw_call`)
    wire: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", (_wire(self.rate_per_ms), _wire(self.capacity)))

    @property
    def rate_per_ms(self) -> float:
        return self.per_minute / 60_000

    def ms_to_refill(self, units: float) -> float:
        return max(units, 0.0) / self.rate_per_ms


@dataclass(frozen=True, slots=True)
class Draw:
    """A bucket's part in one script call."""

    bucket: Bucket
    cost: float
    mode: Mode = "t"


@dataclass(frozen=True, slots=True)
class BucketState:
    level: int  # after the call, floored; negative while in debt
    ahead: int  # calls that gates reported waiting (`pw` draws only)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    take_wait_ms: int
    take_blocker: int | None  # index of the draw that set take_wait_ms
    peek_wait_ms: int
    peek_blocker: int | None
    now_ms: int
    states: list[BucketState]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _wire(value: float) -> str:
    return repr(float(value))


class DrawCall(NamedTuple):
    """The keys and arguments of one `draw` in a script call (`scripts.draw`'s pair)."""

    keys: list[str]
    args: list[Any]


class DrawOptions(TypedDict, total=False):
    max_take_wait_ms: float  # default 0
    max_peek_wait_ms: float  # default unbounded
    gate: str  # the asking gate ('' = none)
    holding: int  # calls the gate holds, the asker included (default 1)


def draw_call(draws: Sequence[Draw], **options: Unpack[DrawOptions]) -> DrawCall:
    per_bucket: list[str | int] = []
    for d in draws:
        per_bucket += [*d.bucket.wire, _wire(d.cost), d.mode]
    return DrawCall(
        *scripts.draw(
            buckets=[d.bucket.key for d in draws],
            max_take_wait_ms=_wire(options.get("max_take_wait_ms", 0.0)),
            max_peek_wait_ms=_wire(options.get("max_peek_wait_ms", UNBOUNDED_MS)),
            gate=options.get("gate", ""),
            holding=options.get("holding", 1),
            report_grace_ms=REPORT_GRACE_MS,
            per_bucket=per_bucket,
        )
    )


def verdict_of(raw: list[Any]) -> Verdict:
    """A `draw`'s answer as a Verdict."""
    states = [BucketState(int(raw[i]), int(raw[i + 1])) for i in range(6, len(raw), 2)]
    return Verdict(
        status=cast(Status, raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])),
        take_wait_ms=int(raw[1]),
        take_blocker=int(raw[2]) - 1 if int(raw[2]) else None,
        peek_wait_ms=int(raw[3]),
        peek_blocker=int(raw[4]) - 1 if int(raw[4]) else None,
        now_ms=int(raw[5]),
        states=states,
    )


class BucketStore:
    """The Python side of the script; one per Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._draw = redis.register_script(scripts.LIMITS_DRAW.source)

    async def draw(self, draws: Sequence[Draw], **options: Unpack[DrawOptions]) -> Verdict:
        return await self.run(draw_call(draws, **options))

    async def run(self, call: DrawCall) -> Verdict:
        return verdict_of(await self._draw(keys=call.keys, args=call.args))

    def draw_into(self, trip: Trip, draws: Sequence[Draw], **options: Unpack[DrawOptions]) -> None:
        """`draw`, queued on a round trip (read its reply with `verdict_of`)."""
        call = draw_call(draws, **options)
        trip.script(self._draw, call.keys, call.args)

    def adjust(self, trip: Trip, draws: Sequence[Draw]) -> None:
        """Add an unconditional charge (positive cost) or refund (negative) to `trip`'s one adjusting
        draw: reconciling estimates. The calls settled on one trip are summed per bucket (their
        order is arbitrary anyway); nothing is sent when nothing changes."""
        pending = trip.aggregate("limits-adjust", lambda: _Adjustments(self)).costs
        for d in draws:
            pending[d.bucket] = pending.get(d.bucket, 0.0) + d.cost


class _Adjustments:
    """The charges and refunds queued on one round trip, summed per bucket."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store
        self.costs: dict[Bucket, float] = {}

    def flush(self, trip: Trip) -> None:
        changes = [Draw(bucket, cost) for bucket, cost in self.costs.items() if cost]
        if changes:
            self.store.draw_into(trip, changes, max_take_wait_ms=UNBOUNDED_MS)


def _capacity(per_minute: float, burst_s: float) -> float:
    return max(per_minute / 60 * burst_s, 1.0)


def tenant_scope(subject: str) -> str:
    """A bounded key part for any JWT subject (long or odd subjects are hashed)."""
    if len(subject) <= 64 and subject.isprintable() and "{" not in subject and "}" not in subject:
        return f"tenant:{subject}"
    return "tenant:#" + hashlib.sha256(subject.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Pair:
    """The requests/min and tokens/min buckets of one scope."""

    requests: Bucket
    tokens: Bucket


class LimitPlan:
    """Which buckets exist and how big they are, from settings (the same in every process). A scope's
    buckets are made once: every request asks for its tenant's and its provider's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.global_ = self._pair("global", settings.rate_limit_global_rpm, settings.rate_limit_global_tpm)
        self._providers = functools.cache(self._provider)  # one per provider
        self._tenants = functools.lru_cache(maxsize=10_000)(self._tenant)

    def _pair(self, scope: str, rpm: float, tpm: float, burst_s: float | None = None) -> Pair:
        burst = self.settings.rate_limit_burst_s if burst_s is None else burst_s
        return Pair(
            Bucket(keys.rate_bucket(scope, "req"), rpm, _capacity(rpm, burst)),
            Bucket(keys.rate_bucket(scope, "tok"), tpm, _capacity(tpm, burst)),
        )

    def provider(self, provider: str) -> Pair:
        """The buckets of a provider."""
        return self._providers(provider)

    def _provider(self, provider: str) -> Pair:
        s = self.settings
        rpm = getattr(s, f"rate_limit_{provider}_rpm", s.rate_limit_global_rpm)
        tpm = getattr(s, f"rate_limit_{provider}_tpm", s.rate_limit_global_tpm)
        return self._pair(f"provider:{provider}", rpm, tpm)

    def tenant(self, subject: str) -> Pair:
        """The buckets of a tenant (a JWT subject)."""
        return self._tenants(subject)

    def _tenant(self, subject: str) -> Pair:
        s = self.settings
        quota = s.tenant_quotas.get(subject)
        rpm = (quota.rpm if quota else None) or s.tenant_default_rpm
        tpm = (quota.tpm if quota else None) or s.tenant_default_tpm
        return self._pair(tenant_scope(subject), rpm, tpm, s.tenant_burst_s)

    def call_draws(self, provider: str, tokens: int, calls: int = 1) -> list[Draw]:
        """What provider calls take: a request each and their tokens, globally and from their provider.
        The request buckets record the asking gate's waiters, for the API's backlog estimate."""
        p = self.provider(provider)
        return [
            Draw(self.global_.requests, calls, "tw"),
            Draw(p.requests, calls, "tw"),
            Draw(self.global_.tokens, tokens, "t"),
            Draw(p.tokens, tokens, "t"),
        ]

    def token_draws(self, provider: str, delta: int) -> list[Draw]:
        return [Draw(self.global_.tokens, delta), Draw(self.provider(provider).tokens, delta)]


def seconds(ms: float) -> int:
    """A wait as whole seconds for Retry-After: never rounded down to a retry that comes too soon."""
    return max(1, math.ceil(ms / 1000))
