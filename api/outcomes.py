"""Turning stored outcomes into HTTP answers without re-encoding the result."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from api.errors import error_response
from shared.errors import ErrorType, GatewayError
from shared.queue import Outcome

SUCCESS_PREFIX = b'{"success":true,"data":'


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def outcome_error(outcome: Outcome) -> GatewayError:
    if outcome.status == "cancelled":
        return GatewayError(ErrorType.CANCELLED, "the request was cancelled before it started", retryable=False)
    return GatewayError.from_dict(outcome.json())


def outcome_response(outcome: Outcome, request_id: str) -> Response:
    if outcome.status == "succeeded":
        return json_response(SUCCESS_PREFIX + outcome.body + b"}")
    err = outcome_error(outcome)
    extra: dict[str, Any] = {"jobId": request_id}
    if outcome.status == "failed":
        extra["attempts"] = outcome.json().get("attempts", [])
    return error_response(err, extra=extra)
