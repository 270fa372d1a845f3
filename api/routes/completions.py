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
from api.errors import error_response
from api.openapi_docs import GATEWAY_ERRORS, ChatResult, ok
from api.outcomes import outcome_response
from shared.schemas import ChatRequest

router = APIRouter(prefix="/api/v1/llm", tags=["completions"], responses=GATEWAY_ERRORS)


@router.post("/chat/completions", summary="Complete a chat and wait for the answer", responses=ok(ChatResult))
async def chat_completions(body: ChatRequest, ctx: ChatContext = Depends(chat_context)) -> Response:
    return await respond(ctx, body)


async def respond(ctx: ChatContext, body: ChatRequest) -> Response:
    """The route's work once the body is valid and the caller known (also `api/chat_fast_path.py`'s)."""
    answer = await complete_sync(ctx, body)
    if answer.refusal is not None:
        return answer.refusal
    rid = answer.request_id
    if answer.outcome is None:
        extra = {"jobId": rid, "statusUrl": answer.status_url}
        return answer.stamp(error_response(answer.timeout_error(), extra=extra))
    return answer.stamp(outcome_response(answer.outcome, rid))
