"""The three SSE formats of a stream (api/sse.py): what a client of each reads for the same deltas and end."""

from __future__ import annotations

from typing import Any

import orjson

from api.sse import AnthropicEvents, GatewayEvents, OpenAIEvents
from shared.queue import Outcome

TEXT = [{"c": "Hel"}, {"c": "lo"}]
TOOL = [{"t": 0, "i": "call_1", "n": "weather", "a": '{"ci'}, {"t": 0, "a": 'ty": "Oslo"}'}]
DONE = Outcome(
    "succeeded",
    orjson.dumps(
        {
            "id": "r1",
            "model": "gpt-4o-mini",
            "content": "Hello",
            "finishReason": "stop",
            "usage": {"promptTokens": 5, "completionTokens": 2, "totalTokens": 7},
        }
    ),
)
CUT = Outcome("failed", orjson.dumps({"type": "service_unavailable", "message": "cut", "attempts": [{"p": 1}]}))


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        out.append(fields)
    return out


def test_gateway_events_number_every_delta_and_end_with_the_answer() -> None:
    fmt = GatewayEvents()
    got = events(fmt.deltas(1, TEXT) + fmt.deltas(3, TOOL) + fmt.end(5, DONE))
    assert [(e["id"], e["event"]) for e in got] == [
        ("1", "delta"),
        ("2", "delta"),
        ("3", "delta"),
        ("4", "delta"),
        ("5", "done"),
    ]
    assert orjson.loads(got[0]["data"]) == {"content": "Hel"}
    assert orjson.loads(got[2]["data"]) == {
        "toolCall": {"index": 0, "id": "call_1", "name": "weather", "arguments": '{"ci'}
    }
    assert orjson.loads(got[-1]["data"])["usage"]["totalTokens"] == 7
    error = events(GatewayEvents().end(3, CUT))[0]
    assert error["event"] == "error"
    assert orjson.loads(error["data"])["error"]["attempts"] == [{"p": 1}]


def test_openai_chunks_open_with_the_role_and_end_with_usage_then_done() -> None:
    fmt = OpenAIEvents("r1", "gpt-4o-mini", 1700000000, include_usage=True)
    raw = fmt.deltas(1, TEXT) + fmt.deltas(3, TOOL) + fmt.end(5, DONE)
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = [orjson.loads(e["data"]) for e in events(raw) if e["data"] != "[DONE]"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    call = chunks[3]["choices"][0]["delta"]["tool_calls"][0]
    assert call == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"ci'},
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    assert all(c["id"] == "chatcmpl-r1" and c["object"] == "chat.completion.chunk" for c in chunks)


def test_openai_cut_stream_ends_with_the_error_object_and_no_done() -> None:
    fmt = OpenAIEvents("r1", "gpt-4o-mini", 1, include_usage=False)
    raw = fmt.deltas(1, TEXT) + fmt.end(3, CUT)
    assert b"[DONE]" not in raw
    assert orjson.loads(events(raw)[-1]["data"])["error"]["message"] == "cut"


def test_anthropic_events_open_blocks_per_kind_and_end_with_stop_reason() -> None:
    fmt = AnthropicEvents("r1", "claude-3-haiku")
    got = events(fmt.deltas(1, TEXT) + fmt.deltas(3, TOOL) + fmt.end(5, DONE))
    names = [e["event"] for e in got]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    tool_start = orjson.loads(got[6]["data"])
    assert tool_start["index"] == 1 and tool_start["content_block"]["name"] == "weather"
    assert orjson.loads(got[8]["data"])["delta"] == {"type": "input_json_delta", "partial_json": 'ty": "Oslo"}'}
    assert orjson.loads(got[10]["data"])["delta"]["stop_reason"] == "end_turn"
    assert got[-1]["id"] == "5"
    error = events(AnthropicEvents("r1", "m").end(1, CUT))
    assert error[0]["event"] == "error" and orjson.loads(error[0]["data"])["error"]["type"] == "overloaded_error"
