"""Anthropic's Messages stream, as the API sends it (`event:` and `data:` lines).

`message_start` (usage: the input tokens, `output_tokens` 1), `content_block_start`, `ping`, one
`content_block_delta` (`text_delta`) per piece, `content_block_stop`, `message_delta` (stop reason,
stop sequence, the output tokens), `message_stop`. A mid-stream error is an `error` event, after
which the response ends.
"""

from __future__ import annotations

from typing import Any

import orjson

from simulator.asgi import Headers
from simulator.faults import FaultRule
from simulator.stream_reply import PIECE, StreamReply, template


def _event(obj: dict[str, Any]) -> bytes:
    name: str = obj["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def error_event(rule: FaultRule) -> bytes:
    error = {"type": rule.error_type or "overloaded_error", "message": rule.message or "Overloaded"}
    return _event({"type": "error", "error": error})


def reply(
    *,
    message_id: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    pieces: list[str],
    stop_reason: str,
    stop_sequence: str | None,
    headers: Headers,
    tool_uses: list[dict[str, Any]] | None = None,
) -> StreamReply:
    """The text block streamed piece by piece, then each `tool_use` block (its input as two
    `input_json_delta` fragments, as the API cuts JSON anywhere), then the message's end."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    opening = b"".join(
        (
            _event({"type": "message_start", "message": message}),
            _event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            _event({"type": "ping"}),
        )
    )
    delta = {"type": "text_delta", "text": PIECE}
    fill = template(_event, {"type": "content_block_delta", "index": 0, "delta": delta})
    closing = b"".join(
        (
            _event({"type": "content_block_stop", "index": 0}),
            *(_tool_use(index, block) for index, block in enumerate(tool_uses or (), start=1)),
            _event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": {"output_tokens": output_tokens},
                }
            ),
            _event({"type": "message_stop"}),
        )
    )
    return StreamReply(headers, opening, pieces, fill, closing, error_event)


def _tool_use(index: int, block: dict[str, Any]) -> bytes:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    half = len(arguments) // 2
    start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    return b"".join(
        (
            _event({"type": "content_block_start", "index": index, "content_block": start}),
            *(
                _event(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    }
                )
                for part in (arguments[:half], arguments[half:])
            ),
            _event({"type": "content_block_stop", "index": index}),
        )
    )
