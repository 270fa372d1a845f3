"""Refuse bodies over the configured size before they are read whole (413, typed error)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send, scope["path"])
                return
        seen = 0
        started = False
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # FastAPI turns an exception raised while it reads the body into its own 400: answer 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send, scope["path"])
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, scope["path"])

    async def _refuse(self, send: Send, path: str) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        # in the shape of the API the path belongs to: Anthropic's, OpenAI's (under /v1/) or the gateway's
        error: dict[str, Any]
        if path == "/v1/messages":
            error = {"type": "error", "error": {"type": "request_too_large", "message": message}}
        elif path.startswith("/v1/"):
            error = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        else:
            error = {
                "success": False,
                "error": {"type": "invalid_request_error", "message": message, "param": None, "retryable": False},
            }
        body = orjson.dumps(error)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
