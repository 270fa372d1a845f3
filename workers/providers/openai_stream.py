"""OpenAI's streamed Chat Completions answer (`chat.completion.chunk` SSE), parsed sans-IO.

Each `data:` event is a chunk: `choices[0].delta` carries text (`content`, or `refusal`, which the
whole-answer parse also takes as the text of a content_filter answer) and fragments of tool calls,
`finish_reason` comes in the last choice chunk, the usage in a chunk of its own with `choices: []`
(asked for by `stream_options.include_usage`), then `data: [DONE]`. An error mid-stream is a
`data: {"error": {...}}` event, without an HTTP status: its type or code says which status the same
error would have had, and the adapter maps it from there.
"""

from __future__ import annotations

from typing import Any

from shared.errors import GatewayError
from shared.stream_events import StreamDelta, ToolCallDelta
from workers.providers.openai import FINISH, PROVIDER, OpenAIAdapter, usage_of
from workers.providers.sse import SseEvent
from workers.providers.streamed import StreamedAnswer

DONE = b"[DONE]"
# The HTTP status an error event's type or code stands for; anything else is taken for a server error.
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
    "timeout": 408,
    "service_unavailable": 503,
}


class OpenAIStreamParser(StreamedAnswer):
    def __init__(self, adapter: OpenAIAdapter) -> None:
        super().__init__(PROVIDER, usage_of)
        self._adapter = adapter

    def on_event(self, event: SseEvent, out: list[StreamDelta]) -> None:
        if event.data == DONE:
            self.end()
            return
        chunk = self.json(event.data)
        if chunk.get("error"):
            raise self._error(chunk)
        if not self.model and chunk.get("model"):
            self.model = str(chunk["model"])
        if self.provider_id is None and chunk.get("id") is not None:
            self.provider_id = str(chunk["id"])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.raw_usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return  # the usage chunk
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text(content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self.text(refusal, out)
                self.finish_reason = "content_filter"
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in _tool_call_deltas(calls):
                    self.tool(call, out)
        finish = choice.get("finish_reason")
        if finish and self.finish_reason != "content_filter":
            self.finish_reason = FINISH.get(str(finish), "stop")

    def _error(self, chunk: dict[str, Any]) -> GatewayError:
        err = chunk["error"]
        kinds = (err.get("code"), err.get("type")) if isinstance(err, dict) else ()
        status = next((_ERROR_STATUS[k] for k in kinds if isinstance(k, str) and k in _ERROR_STATUS), 500)
        return self._adapter.map_error(status, chunk, {})


def _tool_call_deltas(calls: list[Any]) -> list[ToolCallDelta]:
    """A chunk's `tool_calls` fragments (`id`, `function.name` in a call's first one only; `null` or
    absent in the others, as the API reference shows both)."""
    out: list[ToolCallDelta] = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("index"), int):
            continue
        function = call.get("function")
        fn: dict[str, Any] = function if isinstance(function, dict) else {}
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
        if call_id is None and name is None and not arguments:
            continue
        out.append(
            ToolCallDelta(
                call["index"],
                str(call_id) if call_id is not None else None,
                str(name) if name is not None else None,
                arguments if isinstance(arguments, str) else "",
            )
        )
    return out
