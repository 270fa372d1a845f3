"""OpenAI's `chat.completion.chunk` server-sent events, as the API streams them.

`data: {chunk}` events: the role first, the content pieces, an empty delta with the finish reason,
the usage (`choices: []`) when `stream_options.include_usage` is true (the other chunks then carry
`"usage": null`), and `data: [DONE]`. A mid-stream error is `data: {"error": {...}}` with no
`[DONE]` after it, which the `openai` package raises as an `APIError`.
"""

from __future__ import annotations

from typing import Any

import orjson

from simulator.asgi import Headers
from simulator.faults import FaultRule
from simulator.stream_reply import PIECE, StreamReply, template

DONE = b"data: [DONE]\n\n"
_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_event(rule: FaultRule) -> bytes:
    error = {
        "message": rule.message or _ERROR_MESSAGE,
        "type": rule.error_type or "server_error",
        "param": None,
        "code": rule.code,
    }
    return _event({"error": error})


def reply(
    *,
    chunk_id: str,
    created: int,
    model: str,
    system_fingerprint: str,
    n: int,
    pieces: list[str],
    finish_reason: str,
    usage: dict[str, Any] | None,
    headers: Headers,
    tool_calls: list[dict[str, Any]] | None = None,
) -> StreamReply:
    """The stream of `n` identical choices; `usage` None unless the client asked for it. Tool calls
    (the first choice's) follow the content: each call's id and name, then its arguments in two
    fragments, as the API streams them."""
    base = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": system_fingerprint,
    }
    tail = {} if usage is None else {"usage": None}

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **tail}

    role = {"role": "assistant", "content": "", "refusal": None}
    opening = b"".join(_event(chunk(i, role, None)) for i in range(n))
    content = [template(_event, chunk(i, {"content": PIECE}, None)) for i in range(n)]
    calls = b"".join(
        _event(chunk(0, {"tool_calls": [fragment]}, None)) for fragment in _call_fragments(tool_calls or ())
    )
    closing = calls + b"".join(_event(chunk(i, {}, finish_reason)) for i in range(n))
    if usage is not None:
        closing += _event({**base, "choices": [], "usage": usage})

    def every_choice(piece: str) -> bytes:
        return b"".join(fill(piece) for fill in content)

    fill = content[0] if n == 1 else every_choice
    return StreamReply(headers, opening, pieces, fill, closing + DONE, error_event)


def _call_fragments(calls: Any) -> list[dict[str, Any]]:
    fragments: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = str(function.get("arguments") or "")
        half = len(arguments) // 2
        head = {"name": function.get("name"), "arguments": ""}
        fragments.append({"index": index, "id": call.get("id"), "type": "function", "function": head})
        fragments += [
            {"index": index, "function": {"arguments": part}} for part in (arguments[:half], arguments[half:])
        ]
    return fragments
