"""The correlation id: taken from `X-Request-ID` (or made up), echoed back, logged and sent upstream.

A pure ASGI middleware (no per-request task or body buffering): it picks the id, binds it to
structlog's context for every log line of the request, and adds the response header. Routes stamp
it on their job with `stamp()`, so the worker's log lines and the provider call (its own
`X-Request-ID`) carry the same id. When the caller sent none, the made-up id (a uuid4 hex, the
format of job ids) also becomes the job's id: the caller then has one id for everything.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.schemas import JobPayload

HEADER: Final = "X-Request-ID"
_HEADER_RAW: Final = b"x-request-id"
MAX_LENGTH: Final = 128
# Printable ASCII without spaces: safe in a header, a log line and a provider's request.
_VALID: Final = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_LENGTH)


@dataclass(slots=True)
class _Correlation:
    id: str
    supplied: bool  # sent by the caller (else made up here)
    adopted: bool = False  # already given to a job as its id


_current: ContextVar[_Correlation | None] = ContextVar("correlation", default=None)


def new_id() -> str:
    return uuid.uuid4().hex


def accept(raw: bytes | None) -> str | None:
    """The caller's id if it is printable ASCII of at most 128 characters, else None."""
    if raw is not None:
        raw = raw.strip()
        if _VALID.fullmatch(raw):
            return raw.decode("ascii")
    return None


def current() -> str:
    """This request's correlation id (a fresh one outside the middleware, e.g. in a bare test app)."""
    corr = _current.get()
    if corr is None:
        corr = _Correlation(new_id(), supplied=False)
        _current.set(corr)
    return corr.id


def stamp(payload: JobPayload) -> JobPayload:
    """Carry the correlation id in the job: to the worker's logs and upstream as the call's request id.

    The first job of a request without a caller-supplied id takes the made-up id as its own id; any
    further job (a batch's items) keeps its id and shares the correlation id.
    """
    current()
    corr = _current.get()
    assert corr is not None
    if not corr.supplied and not corr.adopted:
        corr.adopted = True
        payload.request_id = corr.id
    payload.correlation_id = corr.id
    payload.call.request_id = corr.id
    return payload


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = accept(next((v for k, v in scope["headers"] if k == _HEADER_RAW), None))
        corr = _Correlation(supplied or new_id(), supplied=supplied is not None)
        header = (_HEADER_RAW, corr.id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_RAW]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _current.set(corr)
        # bind and reset by token: bound_contextvars would also copy the whole context per request
        log_tokens = structlog.contextvars.bind_contextvars(correlation_id=corr.id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            _current.reset(token)
