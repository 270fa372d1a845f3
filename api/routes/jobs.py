"""Asynchronous jobs: submit and get an id at once, then poll (or long-poll) and cancel.

Any request's record is read here by its id: async jobs, synchronous requests and batch items alike.
Each is its tenant's (the JWT subject that made it, kept in the record): another tenant's id answers
404 exactly as an unknown id does, and is never waited on; admins address every tenant's.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.responses import Response

from api.auth import Principal, current_principal
from api.correlation import stamp
from api.openapi_docs import GATEWAY_ERRORS, JOB_STREAM_DOC, JobAccepted, JobCancelled, JobView, ok
from api.outcomes import error_details, json_response, outcome_error
from api.provider_view import unavailable_providers
from api.rate_limits import ApiLimiter, get_limiter
from api.sse import EventFormat, EventStream, GatewayEvents, OpenAIEvents
from api.state import AppState, get_state
from api.stream_flow import KEEP_ALIVE, StreamReader, check_resume, closer, live, nothing, parse_last_event_id, render
from shared.admission import build_payload
from shared.errors import ErrorType, GatewayError
from shared.queue import TERMINAL, Outcome
from shared.schemas import ChatRequest

router = APIRouter(prefix="/api/v1/llm/jobs", tags=["jobs"], responses=GATEWAY_ERRORS)

JobId = Path(pattern=r"^[0-9a-f]{32}$", description="the id returned on submission")


def status_url(request_id: str) -> str:
    return f"{router.prefix}/{request_id}"


@router.post(
    "",
    status_code=202,
    summary="Submit a chat completion to run in the background",
    responses=ok(JobAccepted, 202),
)
async def submit_job(
    body: ChatRequest,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
    unavailable: frozenset[str] = Depends(unavailable_providers),
    limiter: ApiLimiter = Depends(get_limiter),
) -> Response:
    payload = stamp(
        build_payload(body, state.settings, kind="async", tenant=principal.subject, unavailable=unavailable)
    )
    if body.timeout:
        # a job's `timeout` is its time budget once a worker starts it (its time in the queue is not
        # counted: the queue absorbs backlogs); without one, only the provider timeouts bound it
        payload.budget_ms = int(min(body.timeout, state.settings.max_request_timeout_s) * 1000)
    # the tenant's quota (the queue absorbs any provider backlog), then the enqueue: one round trip
    limits = await limiter.admit(payload)
    if limits.refusal is not None:
        return limits.refusal
    data = {
        "id": payload.request_id,
        "status": "queued",
        "provider": payload.provider,
        "model": payload.call.model,
        "statusUrl": status_url(payload.request_id),
    }
    return json_response(
        orjson.dumps({"success": True, "data": data}),
        status=202,
        headers={"Location": status_url(payload.request_id), **limits.headers},
    )


def _job_view(request_id: str, record: dict[str, str], result: bytes | None) -> dict[str, Any]:
    status = record.get("status", "queued")
    view: dict[str, Any] = {
        "id": request_id,
        "status": status,
        "provider": record.get("provider"),
        "model": record.get("model"),
        "createdAt": _int_or_none(record.get("created")),
        "startedAt": _int_or_none(record.get("started")),
        "finishedAt": _int_or_none(record.get("finished")),
        "result": None,
        "error": None,
    }
    if status in TERMINAL and result:
        outcome = Outcome.parse(result)
        if outcome.status == "succeeded":
            view["result"] = outcome.json()
        else:
            view["error"] = outcome_error(outcome).to_dict() | error_details(outcome)
    return view


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None


def _no_job(job_id: str) -> GatewayError:
    """The one answer for an id that does not exist and for another tenant's: no existence oracle."""
    return GatewayError(ErrorType.NOT_FOUND, f"no job {job_id}", param="job_id")


@router.get("/{job_id}", summary="Job status, with the result or a typed error once it ends", responses=ok(JobView))
async def get_job(
    job_id: str = JobId,
    wait: float = Query(0, ge=0, le=600, description="long-poll up to this many seconds"),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    if wait > 0:
        state.waiter.expect(job_id)
        # the watch checks the tenant before it registers: nobody waits on another tenant's job
        status, _result = await state.queue.watch(
            job_id, state.waiter.channel, int(wait) + 5, tenant=principal.tenant_scope
        )
        if status is None:
            state.waiter.forget(job_id)
            raise _no_job(job_id)
        if status in TERMINAL:
            state.waiter.forget(job_id)
        else:
            await state.waiter.wait(job_id, min(wait, state.settings.max_request_timeout_s))
    record = await state.queue.record(job_id)
    if not record or not principal.may_see(record.get("tenant")):
        raise _no_job(job_id)
    result = record.get("result")
    view = _job_view(job_id, record, result.encode() if result else None)
    return json_response(orjson.dumps({"success": True, "data": view}))


@router.get(
    "/{job_id}/stream",
    summary="Follow a request's answer as Server-Sent Events, from its start or after `Last-Event-ID`",
    description=JOB_STREAM_DOC,
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the events"},
        204: {"description": "no event after Last-Event-ID: the stream had ended"},
    },
)
async def stream_job(
    job_id: str = JobId,
    format: Literal["gateway", "openai"] = Query("gateway", description="the events' format"),
    last_event_id: str = Header(
        "", alias="Last-Event-ID", description="the id of the last event received", pattern=r"^[0-9]{0,12}$"
    ),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    after = parse_last_event_id(last_event_id)
    follower = state.hub.follow(job_id)  # before the read: nothing relayed after it can be missed
    try:
        followed = await state.streams.follow(
            job_id, state.waiter.channel, after_seq=after, tenant=principal.tenant_scope, count=True
        )
        if followed is None:
            raise _no_job(job_id)
        streamed = followed.streamed and not followed.deltas_expired
        reader = StreamReader(state, job_id, follower, last_seq=after, streamed=streamed)
        try:
            check_resume(followed, after, job_id)
        except GatewayError:
            if not followed.ended:
                await state.streams.leave(job_id)  # it was counted as a follower
            raise
        events = reader.take(followed)
    except BaseException:
        state.hub.unfollow(follower)
        raise
    if followed.ended and not events:
        state.hub.unfollow(follower)
        return Response(status_code=204)  # the client has every event: SSE clients stop reconnecting on 204
    fmt: EventFormat = (
        OpenAIEvents(job_id, followed.model, followed.created_ms // 1000, True, resumed=after > 0)
        if format == "openai"
        else GatewayEvents()
    )
    state.hub.opened()
    first = render(fmt, events) or KEEP_ALIVE  # the head leaves at once
    rest = live(reader, fmt) if not reader.ended else nothing()
    return EventStream(first, rest, {}, closer(state, reader, counted=not followed.ended))


@router.delete("/{job_id}", summary="Cancel a job that no worker has started", responses=ok(JobCancelled))
async def cancel_job(
    job_id: str = JobId,
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    cancelled = Outcome("cancelled", orjson.dumps({"type": ErrorType.CANCELLED.value}))
    status = await state.queue.cancel(job_id, cancelled, tenant=principal.tenant_scope)
    if status == "missing":
        raise _no_job(job_id)
    if status != "cancelled":
        raise GatewayError(
            ErrorType.CANCELLED,
            f"job {job_id} is {status} and can no longer be cancelled",
            retryable=False,
            status=409,
        )
    data = {"id": job_id, "status": "cancelled"}
    return json_response(orjson.dumps({"success": True, "data": data}))
