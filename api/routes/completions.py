"""Synchronous REST: `POST /api/v1/llm/chat/completions` enqueues the request and waits for it.

Admission, the enqueue and the wait live in `api/chat_flow.py`, shared with the OpenAI-compatible
`POST /v1/chat/completions`; this route only reads the SPEC body and writes the SPEC answer.
Requests reach `respond` through `api/chat_fast_path.py`; the FastAPI route documents it (and
serves under a root path).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from api.chat_flow import ChatContext, chat_context, complete_sync
from api.chat_stream import StreamAnswers, stream_chat
from api.errors import error_response
from api.openapi_docs import EVENT_STREAM, GATEWAY_ERRORS, STREAM_DOC, ChatResult, ok
from api.outcomes import outcome_response
from api.sse import GatewayEvents
from shared.schemas import ChatRequest

STREAM_ANSWERS = StreamAnswers(
    error=lambda err, headers: _with_headers(error_response(err), headers),
    failed=outcome_response,
    refusal=lambda refusal: refusal,
)


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    response.headers.update(headers)
    return response


router = APIRouter(prefix="/api/v1/llm", tags=["completions"], responses=GATEWAY_ERRORS)


@router.post(
    "/chat/completions",
    summary="Complete a chat and wait for the answer (or stream it: `stream: true`)",
    responses={200: {**ok(ChatResult)[200], "content": EVENT_STREAM}},
    description=STREAM_DOC,
)
async def chat_completions(body: ChatRequest, ctx: ChatContext = Depends(chat_context)) -> Response:
    return await respond(ctx, body)


async def respond(ctx: ChatContext, body: ChatRequest) -> Response:
    """The route's work once the body is valid and the caller known (also `api/chat_fast_path.py`'s)."""
    if body.stream:
        return await stream_chat(ctx, body, lambda *_: GatewayEvents(), STREAM_ANSWERS)
    answer = await complete_sync(ctx, body)
    if answer.refusal is not None:
        return answer.refusal
    rid = answer.request_id
    if answer.outcome is None:
        extra = {"jobId": rid, "statusUrl": answer.status_url}
        return answer.stamp(error_response(answer.timeout_error(), extra=extra))
    return answer.stamp(outcome_response(answer.outcome, rid))
