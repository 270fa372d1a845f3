"""The OpenAI-compatible API: `POST /v1/chat/completions` and `GET /v1/models`, in OpenAI's shapes.

The official SDKs work with only `base_url` (this server's `/v1`) and `api_key` (the gateway JWT)
changed. A request takes the same path as `POST /api/v1/llm/chat/completions` (`api/chat_flow.py`,
reached through `api/chat_fast_path.py`): failover, limits and cost apply alike. Every error under
`/v1/`, whichever layer raised it (auth, validation, limits, Redis), leaves in OpenAI's shape:
`{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from api.auth import Principal, current_principal
from api.chat_flow import ChatContext, SyncAnswer, chat_context, complete_sync
from api.chat_stream import StreamAnswers, stream_chat
from api.error_shapes import error_answer, install_error_shape, json_answer, reshaped
from api.openai_shapes import chat_completion, embeddings_list, error_body, parse_chat_body, parse_embeddings_body
from api.openapi_docs import (
    EVENT_STREAM,
    OPENAI_ERRORS,
    OpenAIChatCompletionDoc,
    OpenAIChatRequestDoc,
    OpenAIEmbeddingsDoc,
    OpenAIModelDoc,
    OpenAIModelListDoc,
    openai_schema,
    request_body,
)
from api.outcomes import outcome_error
from api.sse import OpenAIEvents
from api.state import AppState, get_state
from shared.errors import ErrorType, GatewayError
from shared.routing import family_of
from shared.schemas import EmbeddingsRequest

PREFIX = "/v1"
router = APIRouter(prefix=PREFIX, tags=["openai-compatible"], responses=OPENAI_ERRORS)
MODELS_CREATED = 1_700_000_000
MODELS_CREATED_AT = "2023-11-14T22:13:20Z"  # MODELS_CREATED as Anthropic writes a time


openai_json = json_answer


def openai_error(err: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return error_answer(err, error_body, headers)


@router.post(
    "/chat/completions",
    summary="OpenAI's chat completion (and its stream: `stream: true`, chat.completion.chunk events)",
    responses={200: {"model": OpenAIChatCompletionDoc, "content": EVENT_STREAM}},
    openapi_extra=request_body({"application/json": openai_schema(OpenAIChatRequestDoc)}, "OpenAI's chat request"),
)
async def chat_completions(request: Request, ctx: ChatContext = Depends(chat_context)) -> Response:
    return await respond(ctx, request)


async def respond(ctx: ChatContext, request: Request) -> Response:
    """The route's work once the caller is known (also `api/chat_fast_path.py`'s)."""
    data = await _json_of(request)
    if isinstance(data, Response):
        return data
    body = parse_chat_body(data)
    chat = body.to_chat_request()
    if chat.stream:

        def events(rid: str, model: str, created: int) -> OpenAIEvents:
            return OpenAIEvents(rid, model, created, body.include_usage)

        return await stream_chat(ctx, chat, events, STREAM_ANSWERS)
    answer = await complete_sync(ctx, chat)
    return _answered(answer, lambda result: chat_completion(result, body.legacy_functions))


@router.post(
    "/embeddings",
    summary="OpenAI's embeddings",
    responses={200: {"model": OpenAIEmbeddingsDoc}},
    openapi_extra=request_body({"application/json": openai_schema(EmbeddingsRequest)}, "OpenAI's embeddings request"),
)
async def embeddings(request: Request, ctx: ChatContext = Depends(chat_context)) -> Response:
    """Through the same queue, limits, cost and logs as a chat; served by OpenAI (Anthropic has no
    embeddings, so nothing fails over: the attempts say so)."""
    data = await _json_of(request)
    if isinstance(data, Response):
        return data
    return _answered(await complete_sync(ctx, parse_embeddings_body(data)), embeddings_list)


async def _json_of(request: Request) -> Any:
    """The body's JSON, or the 400 OpenAI answers to a body that is not JSON."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return openai_error(
            GatewayError(ErrorType.INVALID_REQUEST, "We could not parse the JSON body of your request.")
        )


def _answered(answer: SyncAnswer, render: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    """The outcome in OpenAI's shape: `render` of a success (with who served it, its id and cost), else
    OpenAI's error."""
    if answer.refusal is not None:
        return as_openai_error(answer.refusal)
    if answer.outcome is None:
        return answer.stamp(openai_error(answer.timeout_error(), {"X-Gateway-Status-Url": answer.status_url}))
    if answer.outcome.status != "succeeded":  # its id: the record (attempts included) can be fetched
        return answer.stamp(openai_error(outcome_error(answer.outcome), {"X-Gateway-Request-Id": answer.request_id}))
    result = answer.outcome.json()
    cost = (result.get("cost") or {}).get("totalCost")
    headers = {"X-Gateway-Provider": str(result.get("provider")), "X-Gateway-Request-Id": answer.request_id}
    if cost is not None:
        headers["X-Gateway-Cost-USD"] = f"{cost:.10g}"
    return answer.stamp(openai_json(render(result), headers=headers))


STREAM_ANSWERS = StreamAnswers(
    error=lambda err, headers: openai_error(err, headers),
    failed=lambda outcome, _rid: openai_error(outcome_error(outcome)),
    refusal=lambda refusal: as_openai_error(refusal),
)


def known_models(state: AppState) -> list[str]:
    return sorted(n for n in state.settings.configured_models() if family_of(n) is not None)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": family_of(name) or "gateway"}


@router.get("/models", summary="The models this gateway routes", responses={200: {"model": OpenAIModelListDoc}})
async def list_models(
    request: Request, state: AppState = Depends(get_state), _: Principal = Depends(current_principal)
) -> Response:
    """Both providers' models; in Anthropic's shape for Anthropic's clients (they send anthropic-version)."""
    models = known_models(state)
    if "anthropic-version" in request.headers:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": MODELS_CREATED_AT} for m in models]
        page = {"data": data, "has_more": False, "first_id": models[0] if models else None}
        return openai_json({**page, "last_id": models[-1] if models else None})
    return openai_json({"object": "list", "data": [_model(m) for m in models]})


@router.get("/models/{model}", summary="One model", responses={200: {"model": OpenAIModelDoc}})
async def get_model(
    model: str, state: AppState = Depends(get_state), _: Principal = Depends(current_principal)
) -> Response:
    if model not in known_models(state):
        err = GatewayError(ErrorType.NOT_FOUND, f"The model `{model}` does not exist", param="model")
        return openai_error(err)
    return openai_json(_model(model))


def as_openai_error(response: Response) -> Response:
    """An error answer in the gateway's shape, re-shaped as OpenAI's."""
    return reshaped(response, error_body)


def install_openai_errors(app: FastAPI) -> None:
    """Make every exception handler registered so far answer in OpenAI's shape under `/v1/`.
    Call it last in the app factory."""
    install_error_shape(app, lambda path: path.startswith(PREFIX + "/"), error_body)
