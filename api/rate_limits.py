"""API-side admission: the tenant's quota, the backlog check of synchronous requests, the headers.

All of it runs in the enqueue's own script (`RequestQueue.enqueue_if_admitted`: the draw of
`shared/limits.py`, then the enqueue only if admitted), so limits add no round trip to the
synchronous hot path:
- it takes a request and the estimated tokens from the tenant's buckets, or refuses: 429 with
  Retry-After, and nothing is enqueued (the workers trade the estimate for the real usage later);
- it peeks at the provider's and the global buckets *behind the calls that worker gates reported
  waiting* (each gate's head reports its count whenever it asks, see `workers/limits_guard.py`;
  calls already holding a reservation show as the buckets' debt).
  (waiting + 1 - level) / rate is how long this request would queue for capacity; a synchronous
  request whose timeout is shorter is refused at once with 429 and Retry-After, and the tenant is not
  charged (the script takes nothing, and enqueues nothing, unless every check passes);
- it reads the provider's requests bucket for the X-RateLimit-* headers;
- before all of it, the provider's backlog: while its queue holds `QUEUE_MAX_WAITING` synchronous and
  async jobs that no worker has claimed (every worker's slots full), a new request is refused, 503
  with Retry-After, before any bucket is drawn (a queue that only grows answers nobody in time; see
  api/shedding.py for the bound on what one API process holds, and bench/README.md for both bounds).
The estimate counts calls already claimed by workers, not jobs still unclaimed in the queue: a
synchronous job jumps ahead of async and batch jobs there, so only other synchronous jobs, beyond
what the workers hold, would be missed.

A tenant refused for its requests/min quota is refused again by this process, without asking Redis,
until the moment its refusal named (Retry-After): nothing can give that bucket a request back sooner,
so the answer is the same, and it comes in microseconds. Through Redis it would wait behind every
admission sent before it on the process's admission lane: under a flood, seconds for an answer that
takes milliseconds when idle. A tokens/min refusal is not remembered (refunds of estimated
tokens can make room sooner).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from starlette.responses import Response

from api.errors import error_response
from api.refusals import RefusalCounter
from api.state import AppState
from shared.errors import ErrorType, GatewayError
from shared.limits import UNBOUNDED_MS, Draw, LimitPlan, Verdict, draw_call, seconds
from shared.queue import RequestQueue
from shared.schemas import JobPayload
from shared.settings import Settings
from shared.token_estimate import estimate_call

MAX_REMEMBERED_REFUSALS = 10_000  # tenants over quota remembered per process
BACKLOG_RETRY_AFTER_S = 1  # workers drain thousands of jobs a second when their provider answers
_clock = time.monotonic

# draw order in the admission script
_TENANT_REQ, _TENANT_TOK, _PROVIDER_REQ, _GLOBAL_REQ, _PROVIDER_TOK, _GLOBAL_TOK = range(6)
_UNITS = {
    _TENANT_REQ: "requests/min",
    _TENANT_TOK: "tokens/min",
    _PROVIDER_REQ: "requests/min",
    _GLOBAL_REQ: "requests/min",
    _PROVIDER_TOK: "tokens/min",
    _GLOBAL_TOK: "tokens/min",
}


@dataclass(frozen=True, slots=True)
class Admitted:
    """The outcome of admission: rate-limit headers for the answer, and a ready 429 if refused."""

    headers: dict[str, str] = field(default_factory=dict)
    refusal: Response | None = None

    def stamp(self, response: Response) -> Response:
        response.headers.update(self.headers)
        return response


class ApiLimiter:
    def __init__(self, queue: RequestQueue, settings: Settings, refusals: RefusalCounter | None = None) -> None:
        self.queue = queue
        self.settings = settings
        self.refusals = refusals or RefusalCounter(enabled=False)
        self.plan = LimitPlan(settings)
        # tenant -> (monotonic time its requests/min bucket holds a request again, its refusal's parts)
        self._over_quota: dict[str, tuple[float, dict[str, str], GatewayError]] = {}

    async def admit(
        self,
        payload: JobPayload,
        *,
        max_wait_s: float | None = None,
        reply: str | None = None,
    ) -> Admitted:
        """Admit a request and enqueue it if admitted, in one script call (`reply`: the waiter's
        channel). `max_wait_s`: how long a synchronous caller waits (None for jobs: they wait in the
        queue for as long as it takes)."""
        refused = self._still_over_quota(payload.tenant or "anonymous")
        if refused is not None:
            return refused
        provider = payload.provider
        estimate = estimate_call(payload.call, provider, self.settings)
        tenant = self.plan.tenant(payload.tenant or "anonymous")
        prov = self.plan.provider(provider)
        glob = self.plan.global_
        draws = [
            Draw(tenant.requests, 1, "t"),
            Draw(tenant.tokens, estimate, "t"),
            Draw(prov.requests, 1, "pw"),
            Draw(glob.requests, 1, "pw"),
            Draw(prov.tokens, estimate, "p"),
            Draw(glob.tokens, estimate, "p"),
        ]
        max_peek_ms = UNBOUNDED_MS if max_wait_s is None else max_wait_s * 1000
        admission = draw_call(draws, max_take_wait_ms=0, max_peek_wait_ms=max_peek_ms)
        # a job handed straight to a worker takes its call's share now, if the buckets hold it
        call = draw_call(self.plan.call_draws(provider, estimate))
        verdict = await self.queue.enqueue_if_admitted(payload, admission, call, reply=reply)
        if verdict.status == "backlog":
            return self._backlog(provider)
        headers = self._headers(provider, verdict, draws)
        if verdict.ok:
            return Admitted(headers)
        self.refusals.count(ErrorType.RATE_LIMIT.value, payload.tenant)
        err = self._refusal(payload, verdict, draws, max_wait_s)
        headers["Retry-After"] = str(int(err.retry_after or 1))
        if verdict.status == "take" and verdict.take_blocker == _TENANT_REQ and verdict.take_wait_ms > 0:
            self._remember(payload.tenant or "anonymous", verdict.take_wait_ms / 1000, headers, err)
        return Admitted(headers, error_response(err, headers=headers))

    def _backlog(self, provider: str) -> Admitted:
        err = GatewayError(
            ErrorType.SERVICE_UNAVAILABLE,
            f"{provider}'s queue holds {self.queue.max_waiting} requests no worker has started: the gateway is"
            " at capacity; retry after the time in Retry-After",
            retryable=True,
            provider=None,
            retry_after=BACKLOG_RETRY_AFTER_S,
        )
        headers = {"Retry-After": str(BACKLOG_RETRY_AFTER_S)}
        return Admitted(headers, error_response(err, headers=headers))

    def _still_over_quota(self, tenant: str) -> Admitted | None:
        """The refusal of a tenant still over its requests/min quota, made here (see the module doc)."""
        known = self._over_quota.get(tenant)
        if known is None:
            return None
        until, headers, err = known
        left = until - _clock()
        if left <= 0:
            del self._over_quota[tenant]
            return None
        self.refusals.count(ErrorType.RATE_LIMIT.value, tenant)
        retry_after = seconds(left * 1000)
        again = GatewayError(err.type, err.message, retryable=True, provider=None, retry_after=retry_after)
        headers = {**headers, "Retry-After": str(int(retry_after or 1))}
        return Admitted(headers, error_response(again, headers=headers))

    def _remember(self, tenant: str, wait_s: float, headers: dict[str, str], err: GatewayError) -> None:
        if len(self._over_quota) >= MAX_REMEMBERED_REFUSALS:  # a flood of tenants: keep the live ones
            now = _clock()
            self._over_quota = {t: v for t, v in self._over_quota.items() if v[0] > now}
            if len(self._over_quota) >= MAX_REMEMBERED_REFUSALS:
                return
        self._over_quota[tenant] = (_clock() + wait_s, headers, err)

    def _refusal(
        self, payload: JobPayload, verdict: Verdict, draws: list[Draw], max_wait_s: float | None
    ) -> GatewayError:
        if verdict.status == "take":
            wait = verdict.take_wait_ms
            at = verdict.take_blocker if verdict.take_blocker is not None else _TENANT_REQ
            limit = draws[at].bucket.per_minute
            message = (
                f"tenant {payload.tenant or 'anonymous'!r} is over its quota of {limit:g} {_UNITS[at]};"
                f" retry in {seconds(wait)} s"
            )
        else:
            wait = verdict.peek_wait_ms
            at = verdict.peek_blocker if verdict.peek_blocker is not None else _PROVIDER_REQ
            scope = payload.provider if at in (_PROVIDER_REQ, _PROVIDER_TOK) else "the gateway"
            message = (
                f"{scope} is at its limit of {draws[at].bucket.per_minute:g} {_UNITS[at]}: this request would"
                f" wait about {wait / 1000:.1f} s for capacity, longer than its timeout of {max_wait_s:g} s"
            )
        return GatewayError(ErrorType.RATE_LIMIT, message, retryable=True, provider=None, retry_after=seconds(wait))

    @staticmethod
    def _headers(provider: str, verdict: Verdict, draws: list[Draw]) -> dict[str, str]:
        """The provider's requests bucket as SPEC.md shows it: limit per minute, what remains after
        this request and the calls queued ahead of it, and when the bucket is full again (epoch ms)."""
        bucket = draws[_PROVIDER_REQ].bucket
        state = verdict.states[_PROVIDER_REQ]
        after = state.level - state.ahead - (1 if verdict.ok else 0)
        reset = verdict.now_ms + int(bucket.ms_to_refill(bucket.capacity - after))
        return {
            "X-RateLimit-Limit": f"{bucket.per_minute:g}",
            "X-RateLimit-Remaining": str(max(after, 0)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Provider": provider,
        }


async def get_limiter(request: Request) -> ApiLimiter:
    """The process's limiter, made on first use from the app's queue and settings."""
    limiter: ApiLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        state: AppState = request.app.state.gateway
        limiter = ApiLimiter(state.queue, state.settings, getattr(request.app.state, "refusals", None))
        request.app.state.rate_limiter = limiter
    return limiter
