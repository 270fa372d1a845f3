"""The two chat routes served without FastAPI's per-request machinery: the hot path's framework cost.

`POST /api/v1/llm/chat/completions` and `POST /v1/chat/completions` are most of the traffic, and
routing, the exception middleware and dependency solving cost about as much CPU as the work itself.
This innermost middleware (inside the correlation id and the body limit) serves exactly these two
method+paths with the routes' own functions: the same body reading and validation (the route's
pydantic field, through FastAPI's `request_body_to_args`), the same caller check (`context_of`),
the same answer (`respond`), and any exception answered by the app's own exception handlers, so
every answer is the one the FastAPI route gives. The FastAPI routes stay for the OpenAPI document
and for anything this path does not take (another method, a root path).
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.dependencies.utils import request_body_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.chat_flow import context_of
from api.routes import completions, openai_compat

Handler = Callable[[Request], Awaitable[Response]]


class ChatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        body_field = _route(completions.router, completions.chat_completions).body_field
        assert body_field is not None

        async def spec_chat(request: Request) -> Response:
            # FastAPI's order: the body is read (a JSON error answers first), then the caller, then validation
            body = await _json_body(request)
            ctx = await context_of(request)
            values, errors = await request_body_to_args([body_field], body, embed_body_fields=False)
            if errors:
                raise RequestValidationError(errors, body=None if body is PydanticUndefined else body)
            return await completions.respond(ctx, values[body_field.name])

        async def openai_chat(request: Request) -> Response:
            return await openai_compat.respond(await context_of(request), request)

        self.handlers: dict[str, Handler] = {
            _route(completions.router, completions.chat_completions).path: spec_chat,
            _route(openai_compat.router, openai_compat.chat_completions).path: openai_chat,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except Exception as exc:
            answer = _exception_handler(request, exc)
            if answer is None:
                raise  # to the server error middleware, like any route's
            response = await answer
        await response(scope, receive, send)


def _route(router: Any, endpoint: Callable[..., Any]) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


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


def _exception_handler(request: Request, exc: Exception) -> Awaitable[Response] | None:
    """The answer of the app's exception handler for `exc` (Starlette's lookup: the nearest class in
    its MRO), or None when no handler takes it."""
    handlers = request.app.exception_handlers
    handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        return None
    return _awaited(handler(request, exc))


async def _awaited(response: Response | Awaitable[Response]) -> Response:
    return await response if inspect.isawaitable(response) else response
