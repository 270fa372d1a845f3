"""The correlation id: taken from `X-Request-ID` (or made up), echoed back, logged and sent upstream.

A pure ASGI middleware (no per-request task or body buffering): it picks the id, binds it to
structlog's context for every log line of the request, and adds the response header. Routes read
it with `current()` and stamp it on the job with `stamp()`, so the worker's logs and the provider
call (its own `X-Request-ID`) carry the same id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.schemas import JobPayload

HEADER: Final = "X-Request-ID"
_HEADER_RAW: Final = b"x-request-id"
MAX_LENGTH: Final = 128
# Printable ASCII without spaces: safe in a header, a log line and a provider's request.
_VALID: Final = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_LENGTH)

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def new_id() -> str:
    return uuid.uuid4().hex


def accept(raw: bytes | None) -> str:
    """The caller's id if it is printable and at most 128 characters, else a fresh one."""
    if raw is not None:
        raw = raw.strip()
        if _VALID.fullmatch(raw):
            return raw.decode("ascii")
    return new_id()


def current() -> str:
    """This request's correlation id (a fresh one outside the middleware, e.g. with it switched off)."""
    cid = _current.get()
    if cid is None:
        cid = new_id()
        _current.set(cid)
    return cid


def stamp(payload: JobPayload) -> JobPayload:
    """Carry the correlation id in the job: to the worker's logs and upstream as the call's request id."""
    cid = current()
    payload.correlation_id = cid
    payload.call.request_id = cid
    return payload


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = next((v for k, v in scope["headers"] if k == _HEADER_RAW), None)
        cid = accept(supplied)
        header = (_HEADER_RAW, cid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_RAW]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _current.set(cid)
        try:
            with structlog.contextvars.bound_contextvars(correlation_id=cid):
                await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
