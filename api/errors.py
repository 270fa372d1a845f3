"""Every error answer on /api/v1/llm has one shape: {"success": false, "error": {type, message, param}}."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shared.errors import ErrorType, GatewayError

# The answers that refuse a request for what the caller sent (api/refusals.py counts them); not a
# 404 or a 409, which answer a request about a thing that is not there or no longer may change.
REFUSALS = frozenset(
    {ErrorType.INVALID_REQUEST, ErrorType.CONTEXT_LENGTH, ErrorType.AUTHENTICATION, ErrorType.PERMISSION}
)


def count_refusal(request: Request, err: GatewayError) -> None:
    refusals = getattr(request.app.state, "refusals", None)
    if refusals is not None and err.type in REFUSALS:
        refusals.count(err.type.value)


def error_response(
    err: GatewayError, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"success": False, "error": {**err.to_dict(), **(extra or {})}}
    hdrs = dict(headers or {})
    if err.retry_after is not None:
        hdrs.setdefault("Retry-After", str(max(1, round(err.retry_after))))
    return Response(orjson.dumps(body), status_code=err.status, headers=hdrs, media_type="application/json")


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    """`("query", "wait")` -> `wait`: the parameter as the caller named it, without where it was."""
    if len(loc) == 2 and loc[0] in ("header", "cookie"):
        return str(loc[1])  # a header's name as sent (`Last-Event-ID`), no union branch in it
    return ".".join(field_path(loc[1:] if loc and loc[0] in _LOCATIONS else loc)) or None


def field_path(loc: Sequence[Any]) -> list[str]:
    """An error's location as the caller's field names and indexes: without the branch names pydantic
    puts in it for a union (`literal['auto','none']`, `NamedToolChoice`, `str`, `function-after[...]`)."""
    return [str(p) for p in loc if not isinstance(p, str) or not _UNION_BRANCH.search(p)]


# a union branch's name in a location: a type (capitalised, or a builtin) or a decorated schema
_UNION_BRANCH = re.compile(r"^(?:[A-Z]|(?:str|int|float|bool|dict|list|none)$)|[\[\]-]")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    err = _validation_refusal(exc)
    count_refusal(request, err)
    return error_response(err)


def _validation_refusal(exc: RequestValidationError) -> GatewayError:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return GatewayError(ErrorType.INVALID_REQUEST, "request body is not valid JSON")
    if tuple(first.get("loc", ())) == ("body",):
        return GatewayError(ErrorType.INVALID_REQUEST, "request body must be a JSON object")
    message = "; ".join(f"{_loc_to_param(e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors[:5])
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=_loc_to_param(first.get("loc", ())), status=422)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    count_refusal(request, exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    etype = {
        401: ErrorType.AUTHENTICATION,
        403: ErrorType.PERMISSION,
        404: ErrorType.NOT_FOUND,
        429: ErrorType.RATE_LIMIT,
    }.get(exc.status_code, ErrorType.INVALID_REQUEST if exc.status_code < 500 else ErrorType.INTERNAL)
    err = GatewayError(etype, str(exc.detail), status=exc.status_code)
    count_refusal(request, err)
    return error_response(err, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
