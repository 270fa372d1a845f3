"""Anthropic's Messages API: `POST /v1/messages`, in Anthropic's shapes.

The official `anthropic` package works with only `base_url` (this server, without `/v1`) and the key
(the gateway JWT, sent as `x-api-key` or `Authorization: Bearer`) changed. A request takes the same
path as every chat request (`api/chat_flow.py`): served by Anthropic for a Claude model, failing over
to OpenAI with the answer written back in Anthropic's shape. With `stream: true` the answer is
Anthropic's event stream (`message_start` ... `message_stop`, `api/sse.py`). `anthropic-version` must
be one the shapes speak; `anthropic-beta` is passed to Anthropic (and keeps the request there). Every error on
this path leaves in Anthropic's shape, `{"type": "error", "error": {type, message}}`.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from api.anthropic_shapes import ANTHROPIC_VERSIONS, bad, error_body, message, parse_messages_body
from api.chat_flow import ChatContext, chat_context, complete_sync
from api.chat_stream import StreamAnswers, stream_chat
from api.error_shapes import error_answer, install_error_shape, json_answer, reshaped
from api.outcomes import outcome_error
from api.sse import AnthropicEvents
from shared.errors import ErrorType, GatewayError

MESSAGES_PATH = "/v1/messages"
router = APIRouter(prefix="/v1", tags=["anthropic-compatible"])


anthropic_json = json_answer


def anthropic_error(err: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return error_answer(err, error_body, headers)


# Out of the OpenAPI document: its request and answer are Anthropic's (docs.anthropic.com's API reference)
@router.post("/messages", summary="Anthropic's Messages API (and its event stream)", include_in_schema=False)
async def messages(request: Request, ctx: ChatContext = Depends(chat_context)) -> Response:
    version = request.headers.get("anthropic-version")
    if version is None:
        return anthropic_error(bad("anthropic-version", "the anthropic-version header is required"))
    if version not in ANTHROPIC_VERSIONS:
        known = ", ".join(sorted(ANTHROPIC_VERSIONS))
        return anthropic_error(bad("anthropic-version", f"unknown anthropic-version; this gateway speaks {known}"))
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return anthropic_error(GatewayError(ErrorType.INVALID_REQUEST, "There was an error parsing the body"))
    try:
        body = parse_messages_body(data, request.headers.get("anthropic-beta"))
        if body.stream:
            return await stream_chat(ctx, body, lambda rid, model, _: AnthropicEvents(rid, model), STREAM_ANSWERS)
        answer = await complete_sync(ctx, body)
    except GatewayError as err:
        return anthropic_error(err)
    if answer.refusal is not None:
        return as_anthropic_error(answer.refusal)
    if answer.outcome is None:
        return answer.stamp(anthropic_error(answer.timeout_error()))
    if answer.outcome.status != "succeeded":
        return answer.stamp(anthropic_error(outcome_error(answer.outcome)))
    result = answer.outcome.json()
    headers = {"X-Gateway-Provider": str(result.get("provider")), "request-id": answer.request_id}
    return answer.stamp(anthropic_json(message(result), headers=headers))


STREAM_ANSWERS = StreamAnswers(
    error=lambda err, headers: anthropic_error(err, headers),
    failed=lambda outcome, _rid: anthropic_error(outcome_error(outcome)),
    refusal=lambda refusal: as_anthropic_error(refusal),
)


def as_anthropic_error(response: Response) -> Response:
    """An error answer in the gateway's shape, re-shaped as Anthropic's."""
    return reshaped(response, error_body)


def install_anthropic_errors(app: FastAPI) -> None:
    """Make every exception handler registered so far answer in Anthropic's shape on `/v1/messages`.
    Call it after the other handlers and before `install_openai_errors` (which then leaves these alone)."""
    install_error_shape(app, lambda path: path == MESSAGES_PATH, error_body)
