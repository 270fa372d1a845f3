"""The error taxonomy of SPEC.md, shared by the API, the workers and the adapters."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    RATE_LIMIT = "rate_limit_error"
    AUTHENTICATION = "authentication_error"
    PERMISSION = "permission_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout_error"
    CONTEXT_LENGTH = "context_length_error"
    INVALID_REQUEST = "invalid_request_error"
    NOT_FOUND = "not_found_error"
    CANCELLED = "cancelled_error"
    INTERNAL = "internal_error"


HTTP_STATUS: dict[ErrorType, int] = {
    ErrorType.RATE_LIMIT: 429,
    ErrorType.AUTHENTICATION: 401,
    ErrorType.PERMISSION: 403,
    ErrorType.SERVICE_UNAVAILABLE: 503,
    ErrorType.TIMEOUT: 504,
    ErrorType.CONTEXT_LENGTH: 400,
    ErrorType.INVALID_REQUEST: 400,
    ErrorType.NOT_FOUND: 404,
    ErrorType.CANCELLED: 409,
    ErrorType.INTERNAL: 500,
}

# Retryable by default; an adapter may say otherwise (OpenAI's insufficient_quota is a 429 that is not).
RETRYABLE: frozenset[ErrorType] = frozenset({ErrorType.RATE_LIMIT, ErrorType.SERVICE_UNAVAILABLE, ErrorType.TIMEOUT})


class GatewayError(Exception):
    """A typed failure that can travel through the queue as JSON and reach the caller intact."""

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        retryable: bool | None = None,
        param: str | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = type in RETRYABLE if retryable is None else retryable
        self.param = param
        self.provider = provider
        self.retry_after = retry_after
        self.status = status if status is not None else HTTP_STATUS[type]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type.value,
            "message": self.message,
            "param": self.param,
            "retryable": self.retryable,
        }
        if self.provider is not None:
            out["provider"] = self.provider
        if self.retry_after is not None:
            out["retryAfter"] = self.retry_after
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatewayError:
        try:
            etype = ErrorType(str(data.get("type")))
        except ValueError:
            etype = ErrorType.INTERNAL
        return cls(
            etype,
            str(data.get("message", "")),
            retryable=data.get("retryable"),
            param=data.get("param"),
            provider=data.get("provider"),
            retry_after=data.get("retryAfter"),
        )

    def __repr__(self) -> str:
        return f"GatewayError({self.type.value!r}, {self.message!r}, retryable={self.retryable})"
