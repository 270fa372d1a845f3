"""The two chat routes as plain Starlette routes, ahead of FastAPI's: the hot path's framework cost.

`POST /api/v1/llm/chat/completions` and `POST /v1/chat/completions` are most of the traffic, and
FastAPI's per-request machinery (dependency solving, its request handler) costs about as much CPU as
the work itself. `chat_routes()` serves exactly these two method+paths with the routes' own functions:
the same body reading and validation (FastAPI's rules for a JSON body, the route's model through a
pydantic `TypeAdapter`, errors located under `body` as FastAPI locates them), the same caller check
(`context_of`) and the same answer (`respond`). Mounted first in the app's router, they run inside
every middleware, the exception middleware included, so an exception is answered by the app's own
handlers. The FastAPI routes stay for the OpenAPI document (it lists only FastAPI's routes) and are
never reached for these two paths; `tests/unit/test_chat_fast_path.py` checks, byte for byte, that
both answer alike.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.chat_flow import context_of
from api.routes import completions, openai_compat
from shared.schemas import ChatRequest

SPEC_CHAT_PATH = completions.router.prefix + "/chat/completions"
OPENAI_CHAT_PATH = openai_compat.router.prefix + "/chat/completions"
_CHAT_REQUEST = TypeAdapter(ChatRequest)


def chat_routes() -> list[BaseRoute]:
    """The two chat routes, to be placed ahead of the FastAPI routes of the same paths."""
    return [
        Route(SPEC_CHAT_PATH, _spec_chat, methods=["POST"], include_in_schema=False),
        Route(OPENAI_CHAT_PATH, _openai_chat, methods=["POST"], include_in_schema=False),
    ]


async def _spec_chat(request: Request) -> Response:
    # FastAPI's order: the body is read (a JSON error answers first), then the caller, then validation
    body = await _json_body(request)
    ctx = await context_of(request)
    return await completions.respond(ctx, _validated(body))


async def _openai_chat(request: Request) -> Response:
    return await openai_compat.respond(await context_of(request), request)


def _validated(body: Any) -> ChatRequest:
    """The body as the route's `body: ChatRequest` parameter takes it, with FastAPI's error shapes:
    a missing body is one `missing` error at `("body",)`, pydantic's errors are located under it."""
    if body is PydanticUndefined:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing], body=None)
    try:
        return _CHAT_REQUEST.validate_python(body, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads a JSON body parameter (`get_request_handler`, strict content type,
    its default): undefined when empty, parsed for a JSON content type, else the raw bytes (which
    then fail validation as not an object)."""
    try:
        body = await request.body()
        if not body:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if not content_type:
            return body
        if content_type != "application/json":
            message = email.message.Message()
            message["content-type"] = content_type
            subtype = message.get_content_subtype()
            if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
                return body
        return json.loads(body)  # the standard library's, as FastAPI's: the same documents pass
    except json.JSONDecodeError as e:
        error = {
            "type": "json_invalid",
            "loc": ("body", e.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.msg},
        }
        raise RequestValidationError([error], body=e.doc) from e
    except HTTPException:
        raise
    except Exception as e:  # e.g. a body over the limit (the body limit answers 413 instead)
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from e
