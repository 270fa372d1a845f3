"""The HTTP protocol the API serves with: head and body of an answer in one write, and bounded heads.

`ApiHttpProtocol.configured(settings)` is the class uvicorn instantiates per connection; the 408 and 431
it answers at the protocol level (before any route runs) speak the API's error format.
"""

from __future__ import annotations

import orjson

from plumbing.http_head_limits import HeadLimitedHttpToolsProtocol
from plumbing.http_server import OneWriteHttpToolsProtocol
from shared.errors import ErrorType, GatewayError
from shared.settings import Settings

_REFUSALS = {
    408: GatewayError(ErrorType.TIMEOUT, "request headers were not received in time", status=408),
    431: GatewayError(ErrorType.INVALID_REQUEST, "request header fields too large", retryable=False, status=431),
}
_BODIES = {status: orjson.dumps({"success": False, "error": err.to_dict()}) for status, err in _REFUSALS.items()}


class ApiHttpProtocol(HeadLimitedHttpToolsProtocol, OneWriteHttpToolsProtocol):
    @classmethod
    def configured(cls, settings: Settings) -> type[ApiHttpProtocol]:
        return cls.with_limits(settings.api_max_header_bytes, settings.api_header_timeout_s)

    def refusal(self, status: int) -> tuple[bytes, bytes]:
        body = _BODIES.get(status)
        return super().refusal(status) if body is None else (b"application/json", body)
