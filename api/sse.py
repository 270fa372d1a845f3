"""Server-Sent Events: a stream's events in the client's format, and the response that writes them.

Three formats, one event model (a batch of deltas from seq `first` on; the end, as the request's outcome):
- `GatewayEvents` (`/api/v1/llm/...`): `event: delta` per delta (`{"content": ...}` or
  `{"toolCall": {index, id, name, arguments}}`), then `event: done` with the answer exactly as the
  non-streaming route gives it (usage, cost, latencyMs, attempts, cached), or `event: error` with the
  error in the gateway's shape (`{"success": false, "error": {...}}`, attempts included). Every event
  has an `id:` (the seq): a client resumes after it with `Last-Event-ID`.
- `OpenAIEvents` (`/v1/...`): `chat.completion.chunk` objects as OpenAI sends them, a final chunk with
  the finish reason, with `stream_options.include_usage` a usage chunk, then `data: [DONE]`. A failure
  is OpenAI's error object (`data: {"error": {...}}`) and never a `[DONE]`: a cut stream must not look
  complete.
- `AnthropicEvents` (`/v1/messages`): Anthropic's Messages stream, content blocks and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.openai_shapes import error_body
from api.outcomes import error_details, outcome_error
from shared.queue import Outcome

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx and others in front must not buffer the stream
}


class EventFormat(Protocol):
    def deltas(self, first_seq: int, deltas: list[dict[str, Any]]) -> bytes:
        """The events of a batch of deltas (wire objects, shared/stream_events.py), seq from `first_seq`."""
        ...

    def end(self, seq: int, outcome: Outcome) -> bytes:
        """The stream's last event(s): the request's outcome."""
        ...


def _event(seq: int, name: str | None, data: bytes) -> bytes:
    head = b"id: %d\n" % seq
    if name is not None:
        head += b"event: " + name.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def outcome_error_dict(outcome: Outcome) -> dict[str, Any]:
    """A failed or cancelled outcome's error, as the gateway states errors (attempts included)."""
    return outcome_error(outcome).to_dict() | error_details(outcome)


class GatewayEvents:
    """The gateway's own events (see the module doc)."""

    def deltas(self, first_seq: int, deltas: list[dict[str, Any]]) -> bytes:
        out = bytearray()
        for i, delta in enumerate(deltas):
            out += _event(first_seq + i, "delta", orjson.dumps(_gateway_delta(delta)))
        return bytes(out)

    def end(self, seq: int, outcome: Outcome) -> bytes:
        if outcome.status == "succeeded":
            return _event(seq, "done", outcome.body)
        return _event(seq, "error", orjson.dumps({"success": False, "error": outcome_error_dict(outcome)}))


def _gateway_delta(delta: Mapping[str, Any]) -> dict[str, Any]:
    if "c" in delta:
        return {"content": delta["c"]}
    call: dict[str, Any] = {"index": delta["t"], "arguments": delta.get("a", "")}
    if "i" in delta:
        call["id"] = delta["i"]
    if "n" in delta:
        call["name"] = delta["n"]
    return {"toolCall": call}


class OpenAIEvents:
    """OpenAI's chunks (see the module doc) for one request."""

    def __init__(
        self, request_id: str, model: str, created: int, include_usage: bool, *, resumed: bool = False
    ) -> None:
        """`resumed`: the client had the first events (the role chunk among them) before it reconnected."""
        self.include_usage = include_usage
        self.model = model
        self._base = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": created}
        self._started = resumed

    def _chunk(self, seq: int, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**self._base, "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        if self.include_usage and "usage" not in extra:
            chunk["usage"] = None
        return _event(seq, None, orjson.dumps(chunk))

    def deltas(self, first_seq: int, deltas: list[dict[str, Any]]) -> bytes:
        out = bytearray()
        if not self._started:
            self._started = True
            role = {"role": "assistant", "content": "", "refusal": None}
            out += self._chunk(first_seq - 1, [{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}])
        for i, delta in enumerate(deltas):
            choice = {"index": 0, "delta": _openai_delta(delta), "logprobs": None, "finish_reason": None}
            out += self._chunk(first_seq + i, [choice])
        return bytes(out)

    def end(self, seq: int, outcome: Outcome) -> bytes:
        if outcome.status != "succeeded":
            return _event(seq, None, orjson.dumps(error_body(outcome_error_dict(outcome))))
        data = outcome.json()
        self.model = str(data.get("model") or self.model)
        out = bytearray()
        if not self._started:  # an answer with no delta (empty, or served whole: a cache hit)
            out += self.deltas(seq, [])
        finish = data.get("finishReason")
        if finish not in ("stop", "length", "content_filter", "tool_calls"):
            finish = "stop"
        out += self._chunk(seq, [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
        if self.include_usage:
            usage = data.get("usage") or {}
            figures = {
                "prompt_tokens": usage.get("promptTokens", 0),
                "completion_tokens": usage.get("completionTokens", 0),
                "total_tokens": usage.get("totalTokens", 0),
            }
            out += self._chunk(seq, [], usage=figures)
        out += b"data: [DONE]\n\n"
        return bytes(out)


def _openai_delta(delta: Mapping[str, Any]) -> dict[str, Any]:
    if "c" in delta:
        return {"content": delta["c"]}
    function: dict[str, Any] = {"arguments": delta.get("a", "")}
    call: dict[str, Any] = {"index": delta["t"]}
    if "i" in delta:
        call["id"] = delta["i"]
        call["type"] = "function"
    if "n" in delta:
        function["name"] = delta["n"]
    call["function"] = function
    return {"tool_calls": [call]}


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_ANTHROPIC_ERROR = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "service_unavailable": "overloaded_error",
    "timeout_error": "api_error",
    "context_length_error": "invalid_request_error",
}


def _named(name: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    return head + b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicEvents:
    """Anthropic's Messages stream (`message_start`, content blocks with `text_delta` and
    `input_json_delta`, `message_delta` with the stop reason and usage, `message_stop`; a failure is an
    `error` event and no `message_stop`) for one request. The delta events carry the seq as `id:`."""

    def __init__(self, request_id: str, model: str, *, resumed: bool = False) -> None:
        self.message_id = f"msg_{request_id}"
        self.model = model
        self._started = resumed
        self._block = -1 if not resumed else 0  # the open content block's index
        self._open: tuple[str, int] | None = None  # ("text", 0) or ("tool", tool index)

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _named("message_start", {"type": "message_start", "message": message}) + _named("ping", {"type": "ping"})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _named("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _open_block(self, kind: str, key: int, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block += 1
        self._open = (kind, key)
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return out + _named("content_block_start", start)

    def deltas(self, first_seq: int, deltas: list[dict[str, Any]]) -> bytes:
        out = bytearray(b"" if self._started else self._start())
        for i, delta in enumerate(deltas):
            if "c" in delta:
                if self._open is None or self._open[0] != "text":
                    out += self._open_block("text", 0, {"type": "text", "text": ""})
                piece = {"type": "text_delta", "text": delta["c"]}
            else:
                if self._open != ("tool", delta["t"]):
                    block = {"type": "tool_use", "id": delta.get("i", ""), "name": delta.get("n", ""), "input": {}}
                    out += self._open_block("tool", delta["t"], block)
                piece = {"type": "input_json_delta", "partial_json": delta.get("a", "")}
            event = {"type": "content_block_delta", "index": self._block, "delta": piece}
            out += _named("content_block_delta", event, first_seq + i)
        return bytes(out)

    def end(self, seq: int, outcome: Outcome) -> bytes:
        if outcome.status != "succeeded":
            error = outcome_error_dict(outcome)
            kind = _ANTHROPIC_ERROR.get(str(error.get("type")), "api_error")
            body = {"type": "error", "error": {"type": kind, "message": error.get("message") or kind}}
            return _named("error", body, seq)
        data = outcome.json()
        out = bytearray(b"" if self._started else self._start())
        out += self._close()
        usage = data.get("usage") or {}
        stop = _ANTHROPIC_STOP.get(str(data.get("finishReason")), "end_turn")
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"input_tokens": usage.get("promptTokens", 0), "output_tokens": usage.get("completionTokens", 0)},
        }
        out += _named("message_delta", message_delta)
        out += _named("message_stop", {"type": "message_stop"}, seq)
        return bytes(out)


class EventStream(Response):
    """An SSE response: `first` at once with the head, then each part of `rest` as it comes, one write
    each. When the client goes away the parts stop (`rest` is closed); `on_close(gone)` runs at the
    end either way, `gone` True when the client left before the end. (A Starlette `Response` for its
    head only: the body is written by `__call__`.)"""

    def __init__(
        self,
        first: bytes,
        rest: AsyncGenerator[bytes, None],
        headers: Mapping[str, str],
        on_close: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **headers})
        self.first = first
        self.rest = rest
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            writer = asyncio.ensure_future(self._write(send))
            listener = asyncio.ensure_future(_disconnected(receive))
            try:
                await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not writer.done():
                    gone = True
                    writer.cancel()
                listener.cancel()
                await asyncio.wait((writer,))
            failure = None if writer.cancelled() else writer.exception()
            if failure is not None:
                gone = True  # the write failed: the client is gone, or the stream broke
                if not isinstance(failure, OSError):
                    log.error("a stream's writer failed", exc_info=failure)
        except OSError:
            gone = True
        finally:
            with contextlib.suppress(Exception):
                await self.rest.aclose()
            await self.on_close(gone)

    async def _write(self, send: Send) -> None:
        async for part in self.rest:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
