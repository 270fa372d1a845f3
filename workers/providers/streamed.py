"""What both providers' stream parsers share: the SSE framing, the answer assembled so far, the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from shared.schemas import CalledTool, FinishReason, ProviderResult, Usage
from shared.stream_events import StreamDelta, TextDelta, ToolCallDelta
from workers.providers.sse import SseEvent, SseSplitter
from workers.providers.translate import malformed


class StreamedAnswer:
    """A `StreamParser` (workers/providers/base.py) but for what one event means (`on_event`)."""

    def __init__(self, provider: str, usage_of: Callable[[Any], Usage]) -> None:
        self.provider = provider
        self._sse = SseSplitter()
        self._usage_of = usage_of
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # tool call index -> [id, name, arguments so far]
        self.finish_reason: FinishReason = "stop"  # what the whole answer's parse assumes when none is given
        self.raw_usage: dict[str, Any] = {}
        self.model = ""
        self.provider_id: str | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> list[StreamDelta]:
        out: list[StreamDelta] = []
        for event in self._sse.feed(data):
            if not self._done:  # nothing after the end marker counts
                self.on_event(event, out)
        return out

    def on_event(self, event: SseEvent, out: list[StreamDelta]) -> None:
        raise NotImplementedError

    def end(self) -> None:
        self._done = True

    def text(self, fragment: str, out: list[StreamDelta]) -> None:
        self._text.append(fragment)
        out.append(TextDelta(fragment))

    def tool(self, delta: ToolCallDelta, out: list[StreamDelta]) -> None:
        call = self._calls.setdefault(delta.index, ["", "", ""])
        if delta.id is not None:
            call[0] = delta.id
        if delta.name is not None:
            call[1] = delta.name
        call[2] += delta.arguments
        out.append(delta)

    def json(self, data: bytes) -> dict[str, Any]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.provider, "a stream event is not JSON") from None
        if not isinstance(obj, dict):
            raise malformed(self.provider, "a stream event is not a JSON object")
        return obj

    def result(self) -> ProviderResult:
        return ProviderResult(
            content="".join(self._text),
            finish_reason=self.finish_reason,
            usage=self._usage_of(self.raw_usage),
            model=self.model,
            provider_id=self.provider_id,
            tool_calls=[CalledTool(*self._calls[i]) for i in sorted(self._calls)] or None,
        )
