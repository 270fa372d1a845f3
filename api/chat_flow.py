"""One synchronous chat request, from admission to its outcome: shared by both chat routes.

`POST /api/v1/llm/chat/completions` (SPEC shapes) and `POST /v1/chat/completions` (OpenAI shapes)
differ only in how they read the body and write the answer; routing around unavailable providers,
the correlation id, the tenant's limits, the enqueue and the wait all happen here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from api import response_cache
from api.auth import Principal, bearer_scheme, current_principal
from api.cache_flow import abandon_lead, serve_from_cache
from api.correlation import stamp
from api.provider_view import unavailable_providers
from api.rate_limits import Admitted, ApiLimiter, get_limiter
from api.state import AppState, get_state
from plumbing.deadline import Deadline
from shared.admission import build_payload
from shared.errors import ErrorType, GatewayError
from shared.queue import Outcome, now_ms
from shared.schemas import ChatRequest, EmbeddingsRequest, JobPayload

JOBS_PATH = "/api/v1/llm/jobs"


@dataclass(frozen=True, slots=True)
class ChatContext:
    """What a chat route needs besides the body, resolved once per request (`context_of`)."""

    state: AppState
    principal: Principal
    unavailable: frozenset[str]
    limiter: ApiLimiter


async def context_of(request: Request) -> ChatContext:
    """The context from the functions other routes use as dependencies, called in turn (only
    `current_principal` can refuse: 401, 403 or 503)."""
    return ChatContext(
        await get_state(request),
        await current_principal(request, None),
        await unavailable_providers(request),
        await get_limiter(request),
    )


async def chat_context(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> ChatContext:
    """The chat routes' one dependency (the bearer scheme declares their security in OpenAPI)."""
    return await context_of(request)


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    request_id: str
    timeout_s: float
    limits: Admitted
    outcome: Outcome | None  # None: refused at admission (see `refusal`) or no answer in time

    @property
    def refusal(self) -> Response | None:
        """The ready 429 when the limits refused the request (nothing was enqueued)."""
        return self.limits.refusal

    def timeout_error(self) -> GatewayError:
        return GatewayError(
            ErrorType.TIMEOUT,
            f"no answer within {self.timeout_s:g}s; the request was stopped at that deadline (no provider"
            " call starts after it) and its record can be fetched",
            retryable=True,
        )

    @property
    def status_url(self) -> str:
        return f"{JOBS_PATH}/{self.request_id}"

    def stamp(self, response: Response) -> Response:
        """Add the rate-limit headers to the route's answer."""
        return self.limits.stamp(response)


def sync_payload(ctx: ChatContext, body: ChatRequest | EmbeddingsRequest) -> tuple[JobPayload, float]:
    """A synchronous request's job, with its deadline, and its timeout in seconds."""
    settings = ctx.state.settings
    payload = stamp(
        build_payload(body, settings, kind="sync", tenant=ctx.principal.subject, unavailable=ctx.unavailable)
    )
    asked = body.timeout if isinstance(body, ChatRequest) else None
    timeout = min(asked or settings.request_timeout_s, settings.max_request_timeout_s)
    # the deadline travels with the job: past it, no worker starts (or goes on with) a provider call
    # for a caller who has stopped waiting (a stream: none waits for its first delta past it)
    payload.deadline_ms = payload.created_ms + int(timeout * 1000)
    return payload, timeout


async def admit_sync(ctx: ChatContext, payload: JobPayload, timeout: float) -> Admitted | None:
    """The tenant's quota and the backlog check, then the enqueue if admitted: one round trip. It waits
    behind every command sent before it on the process's one admission lane: under a flood that is
    seconds, so it is bounded by the deadline too (None when it passed). The caller has its 504 then;
    if the enqueue still happens, its job carries the passed deadline and no provider is called for it."""
    deadline_ms = payload.deadline_ms or now_ms()
    try:
        with Deadline((deadline_ms - now_ms()) / 1000):
            return await ctx.limiter.admit(payload, max_wait_s=timeout, reply=ctx.state.waiter.channel)
    except TimeoutError:
        return None


async def complete_sync(ctx: ChatContext, body: ChatRequest | EmbeddingsRequest) -> SyncAnswer:
    """Admit, enqueue and wait for one synchronous request (a chat, or embeddings: never cached)."""
    state, settings = ctx.state, ctx.state.settings
    payload, timeout = sync_payload(ctx, body)
    rid = payload.request_id
    cache_digest = response_cache.digest(body, settings) if isinstance(body, ChatRequest) else None
    if cache_digest is not None:
        served = await serve_from_cache(state, cache_digest, rid, timeout, ctx.principal.subject)
        if served is not None:
            return SyncAnswer(served.request_id, timeout, Admitted(), served.outcome)
        payload.cache_key = cache_digest  # this request leads: its worker fills the cache
    state.waiter.expect(rid)  # before enqueue: the answer cannot overtake us
    try:
        limits = await admit_sync(ctx, payload, timeout)
    except BaseException:
        state.waiter.forget(rid)
        raise
    if limits is None:
        state.waiter.forget(rid)
        return SyncAnswer(rid, timeout, Admitted(), None)
    if limits.refusal is not None:
        state.waiter.forget(rid)
        if cache_digest is not None:
            await abandon_lead(state, cache_digest, rid, Outcome("failed", error_of(limits.refusal)))
        return SyncAnswer(rid, timeout, limits, None)
    # the wait ends at the deadline itself, not `timeout` after the admission's round trip
    outcome = await state.waiter.wait(rid, max((payload.deadline_ms or 0) - now_ms(), 0) / 1000)
    return SyncAnswer(rid, timeout, limits, outcome)


def error_of(refusal: Response) -> bytes:
    """The error document of a ready error answer, as a stored outcome's body."""
    return orjson.dumps(orjson.loads(bytes(refusal.body))["error"])
