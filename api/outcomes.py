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
    body = outcome.json()
    if outcome.status == "cancelled" and not (isinstance(body, dict) and body.get("message")):
        return GatewayError(ErrorType.CANCELLED, "the request was cancelled before it started", retryable=False)
    return GatewayError.from_dict(body)


def error_details(outcome: Outcome) -> dict[str, Any]:
    """What an ended request's error carries besides the error itself: its attempts, and for a stream
    stopped when its client went away, the usage and cost of what it produced."""
    body = outcome.json()
    if not isinstance(body, dict):
        return {}
    details = {k: body[k] for k in ("usage", "cost") if k in body}
    if outcome.status == "failed" or "attempts" in body:
        details["attempts"] = body.get("attempts", [])
    return details


def outcome_response(outcome: Outcome, request_id: str) -> Response:
    if outcome.status == "succeeded":
        return json_response(SUCCESS_PREFIX + outcome.body + b"}")
    err = outcome_error(outcome)
    return error_response(err, extra={"jobId": request_id, **error_details(outcome)})
