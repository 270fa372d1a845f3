"""Anthropic's streamed Messages answer (`message_start` ... `message_stop`), parsed sans-IO.

`message_start` gives the id, model and input usage; each content block opens with
`content_block_start` and grows by `content_block_delta`s (`text_delta` for text, `input_json_delta`
for a tool_use block's input; thinking and citation deltas are not part of the answer's text);
`message_delta` gives the stop reason and the usage so far (its counts are cumulative: they replace
message_start's), `message_stop` ends the answer, `ping` means nothing. An `error` event carries
the same `{"type": "error", "error": {...}}` body a failed request has, without its HTTP status:
the error's type says which status it goes with (Anthropic's error reference), and the adapter
maps it from there (an `overloaded_error` is a 529: retryable).
"""

from __future__ import annotations

from typing import Any

from shared.stream_events import StreamDelta, ToolCallDelta
from workers.providers.anthropic import FINISH, PROVIDER, AnthropicAdapter, usage_of
from workers.providers.anthropic_translate import JSON_TOOL
from workers.providers.sse import SseEvent
from workers.providers.streamed import StreamedAnswer

_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicStreamParser(StreamedAnswer):
    def __init__(self, adapter: AnthropicAdapter) -> None:
        super().__init__(PROVIDER, usage_of)
        self._adapter = adapter
        self._tools: dict[int, int] = {}  # content block index -> the block's position among tool_use blocks
        self._json_block: int | None = None  # the content block of a JSON response format's forced tool

    def on_event(self, event: SseEvent, out: list[StreamDelta]) -> None:
        obj = self.json(event.data)
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._delta(obj, out)
        elif kind == "content_block_start":
            self._block_start(obj, out)
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self.model = str(message.get("model") or "")
                self.provider_id = str(message["id"]) if message.get("id") is not None else None
                self._usage(message.get("usage"))
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.finish_reason = FINISH.get(str(delta["stop_reason"]), "stop")
                if self._json_block is not None and self.finish_reason == "tool_calls":
                    self.finish_reason = "stop"  # the forced tool of a JSON response format answered
            self._usage(obj.get("usage"))
        elif kind == "message_stop":
            self.end()
        elif kind == "error":
            err = obj.get("error")
            etype = err.get("type") if isinstance(err, dict) else None
            status = _ERROR_STATUS.get(etype, 500) if isinstance(etype, str) else 500
            raise self._adapter.map_error(status, obj, {})
        # ping, content_block_stop and event types added later: nothing to read

    def _block_start(self, obj: dict[str, Any], out: list[StreamDelta]) -> None:
        block = obj.get("content_block")
        if not isinstance(block, dict):
            return
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            self.text(block["text"], out)
        elif block.get("type") == "tool_use" and block.get("name") == JSON_TOOL and isinstance(obj.get("index"), int):
            self._json_block = obj["index"]  # a JSON response format's forced tool: its input is the text
        elif block.get("type") == "tool_use" and isinstance(obj.get("index"), int):
            position = self._tools[obj["index"]] = len(self._tools)
            call_id, name = block.get("id"), block.get("name")
            self.tool(
                ToolCallDelta(
                    position, str(call_id) if call_id is not None else None, str(name) if name is not None else None
                ),
                out,
            )

    def _delta(self, obj: dict[str, Any], out: list[StreamDelta]) -> None:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                self.text(text, out)
        elif kind == "input_json_delta":
            partial = delta.get("partial_json")
            if obj.get("index") == self._json_block and isinstance(partial, str) and partial:
                self.text(partial, out)
                return
            position = self._tools.get(obj.get("index"))  # type: ignore[arg-type]
            if position is not None and isinstance(partial, str) and partial:
                self.tool(ToolCallDelta(position, arguments=partial), out)

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.raw_usage.update((k, v) for k, v in usage.items() if v is not None)
