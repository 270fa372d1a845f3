"""Errors in a compatible API's own shape: re-shaping the gateway's error answers, whichever layer
raised them (auth, validation, limits, Redis), on the paths of that API (`/v1/...` for OpenAI's,
`/v1/messages` for Anthropic's)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from shared.errors import GatewayError

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]
ErrorBody = Callable[[dict[str, Any]], dict[str, Any]]


def json_answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def error_answer(err: GatewayError, error_body: ErrorBody, headers: dict[str, str] | None = None) -> Response:
    """A gateway error in `error_body`'s shape, with its Retry-After."""
    hdrs = dict(headers or {})
    if err.retry_after is not None:
        hdrs.setdefault("Retry-After", str(max(1, round(err.retry_after))))
    return json_answer(error_body(err.to_dict()), status=err.status, headers=hdrs)


def reshaped(response: Response, error_body: ErrorBody) -> Response:
    """An error answer in the gateway's shape, re-shaped by `error_body` (status and headers kept; a 422
    validation error becomes the 400 both providers answer)."""
    try:
        body = orjson.loads(bytes(response.body))
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return response
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict) or "success" not in body:
        return response
    status = 400 if response.status_code == 422 else response.status_code
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return json_answer(error_body(body["error"]), status=status, headers=headers)


def install_error_shape(app: FastAPI, applies: Callable[[str], bool], error_body: ErrorBody) -> None:
    """Make every exception handler registered so far answer in `error_body`'s shape on the paths
    `applies` to. A handler installed later wraps this one and finds no gateway-shaped error to re-shape."""
    for exc_class, handler in list(app.exception_handlers.items()):
        app.exception_handlers[exc_class] = _shaped(handler, applies, error_body)


def _shaped(handler: Handler, applies: Callable[[str], bool], error_body: ErrorBody) -> Handler:
    async def wrapped(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        if request.scope.get("type") == "http" and applies(request.url.path):
            return reshaped(response, error_body)
        return response

    return wrapped
