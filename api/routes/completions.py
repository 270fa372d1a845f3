"""Synchronous REST: `POST /api/v1/llm/chat/completions` enqueues the request and waits for it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from api.auth import Principal, current_principal
from api.correlation import stamp
from api.errors import error_response
from api.outcomes import outcome_response
from api.rate_limits import ApiLimiter, get_limiter
from api.provider_view import unavailable_providers
from api.state import AppState, get_state
from shared.admission import build_payload
from shared.errors import ErrorType, GatewayError
from shared.schemas import ChatRequest

router = APIRouter(prefix="/api/v1/llm", tags=["completions"])

JOBS_PATH = "/api/v1/llm/jobs"


@router.post("/chat/completions", summary="Complete a chat and wait for the answer")
async def chat_completions(
    body: ChatRequest,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
    unavailable: frozenset[str] = Depends(unavailable_providers),
    limiter: ApiLimiter = Depends(get_limiter),
) -> Response:
    settings = state.settings
    payload = stamp(build_payload(body, settings, kind="sync", tenant=principal.subject, unavailable=unavailable))
    rid = payload.request_id
    timeout = min(body.timeout or settings.request_timeout_s, settings.max_request_timeout_s)
    limits = await limiter.admit(payload, max_wait_s=timeout)  # tenant quota and backlog: one round trip
    if limits.refusal is not None:
        return limits.refusal
    state.waiter.expect(rid)  # before enqueue: the answer cannot overtake us
    try:
        await state.queue.enqueue(payload, reply=state.waiter.channel)
    except BaseException:
        state.waiter.forget(rid)
        raise
    outcome = await state.waiter.wait(rid, timeout)
    if outcome is None:
        err = GatewayError(
            ErrorType.TIMEOUT,
            f"no answer within {timeout:g}s; the request goes on and its result can be fetched",
            retryable=True,
        )
        return limits.stamp(error_response(err, extra={"jobId": rid, "statusUrl": f"{JOBS_PATH}/{rid}"}))
    return limits.stamp(outcome_response(outcome, rid))
