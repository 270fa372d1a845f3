"""The adapters' stream parsers on the providers' own documented streams, cut at every byte.

Fixtures (the providers' public documentation; whitespace inside the JSON as printed there):
- OPENAI_TEXT: OpenAI API reference, "Create chat completion", streaming example response
  (platform.openai.com/docs/api-reference/chat/create); the "...." of the middle chunks left out,
  the usage chunk (`choices: []`) as "The chat completion chunk object" describes `usage` under
  `stream_options.include_usage`, and the closing `data: [DONE]` the same reference names.
- OPENAI_TOOL: OpenAI function-calling guide, "Streaming" (platform.openai.com/docs/guides/function-calling):
  the guide prints each chunk's `delta.tool_calls`; here each is in a chunk as above.
- ANTHROPIC_TEXT, ANTHROPIC_TOOL, the error event: Anthropic's "Streaming Messages" page
  (docs.anthropic.com/en/docs/build-with-claude/streaming), "Basic streaming request" and
  "Streaming request with tool use" responses, and "Error events".
"""

# ruff: noqa: E501  (the fixtures are the documentation's lines, unwrapped)

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall
from shared.settings import Settings
from shared.stream_events import StreamDelta, TextDelta, ToolCallDelta
from workers.providers import build_adapter
from workers.providers.base import StreamParser
from workers.providers.sse import SseEvent, SseSplitter

OPENAI_TEXT = b"""data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":4}}}

data: [DONE]

"""
# The whole (non-streamed) answer with the same content and usage.
OPENAI_WHOLE: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 12,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}

_TOOL_FRAGMENTS = [
    {
        "index": 0,
        "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "function": {"arguments": "", "name": "get_weather"},
        "type": "function",
    },
    *(
        {"index": 0, "id": None, "function": {"arguments": part, "name": None}, "type": None}
        for part in ['{"', "location", '":"', "Paris", ",", " France", '"}']
    ),
]
OPENAI_TOOL = (
    b"".join(
        b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":'
        + json.dumps({"tool_calls": [fragment]}).encode()
        + b',"finish_reason":null}]}\n\n'
        for fragment in _TOOL_FRAGMENTS
    )
    + b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    + b"data: [DONE]\n\n"
)

ANTHROPIC_TEXT = b"""event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""
ANTHROPIC_WHOLE: dict[str, Any] = {
    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
    "type": "message",
    "role": "assistant",
    "model": "claude-opus-4-6",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 25, "output_tokens": 15},
}


def _anthropic(event: str, **data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


_TEXT = ["Okay", ",", " let", "'s", " check", " the", " weather", " for", " San", " Francisco", ",", " CA", ":"]
_JSON = ["", '{"location":', ' "San', " Francisc", "o,", ' CA"', ", ", '"unit": "fah', 'renheit"}']
ANTHROPIC_TOOL = b"".join(
    [
        _anthropic(
            "message_start",
            message={
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-6",
                "stop_sequence": None,
                "usage": {"input_tokens": 472, "output_tokens": 2},
                "content": [],
                "stop_reason": None,
            },
        ),
        _anthropic("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        _anthropic("ping"),
        *(_anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": t}) for t in _TEXT),
        _anthropic("content_block_stop", index=0),
        _anthropic(
            "content_block_start",
            index=1,
            content_block={
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        ),
        *(
            _anthropic("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": j})
            for j in _JSON
        ),
        _anthropic("content_block_stop", index=1),
        _anthropic(
            "message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 89}
        ),
        _anthropic("message_stop"),
    ]
)
ANTHROPIC_OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def parser(provider: str) -> StreamParser:
    return build_adapter(provider, SETTINGS).stream_parser()


def feed_all(provider: str, pieces: list[bytes]) -> tuple[list[StreamDelta], StreamParser]:
    p = parser(provider)
    out: list[StreamDelta] = []
    for piece in pieces:
        out += p.feed(piece)
    return out, p


def every_split(body: bytes) -> list[list[bytes]]:
    """The body in two at every byte, and one byte at a time."""
    return [[body[:i], body[i:]] for i in range(len(body) + 1)] + [[body[i : i + 1] for i in range(len(body))]]


FIXTURES = [
    ("openai", OPENAI_TEXT),
    ("openai", OPENAI_TOOL),
    ("anthropic", ANTHROPIC_TEXT),
    ("anthropic", ANTHROPIC_TOOL),
]


@pytest.mark.parametrize(
    ("provider", "body"), FIXTURES, ids=["openai-text", "openai-tool", "anthropic-text", "anthropic-tool"]
)
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_every_split_point_gives_the_same_deltas(provider: str, body: bytes, line_end: bytes) -> None:
    body = body.replace(b"\n", line_end)
    whole, p = feed_all(provider, [body])
    assert whole and p.done
    for pieces in every_split(body):
        deltas, p = feed_all(provider, pieces)
        assert deltas == whole
        assert p.done
        assert p.result() == parser_result(provider, body)


def parser_result(provider: str, body: bytes) -> Any:
    return feed_all(provider, [body])[1].result()


def test_openai_text_and_usage_as_the_whole_answer_parses_them() -> None:
    deltas, p = feed_all("openai", [OPENAI_TEXT])
    assert deltas == [TextDelta("Hello")]
    assert p.result() == build_adapter("openai", SETTINGS).parse_response(OPENAI_WHOLE)
    assert p.result().usage.cached_prompt_tokens == 4


def test_anthropic_text_and_usage_as_the_whole_answer_parses_them() -> None:
    deltas, p = feed_all("anthropic", [ANTHROPIC_TEXT])
    assert deltas == [TextDelta("Hello"), TextDelta("!")]
    assert p.result() == build_adapter("anthropic", SETTINGS).parse_response(ANTHROPIC_WHOLE)


def test_anthropic_cache_tokens_count_as_the_whole_answer_counts_them() -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 40, "output_tokens": 1}
    body = ANTHROPIC_TEXT.replace(
        b'"usage": {"input_tokens": 25, "output_tokens": 1}', b'"usage": ' + json.dumps(usage).encode()
    )
    _, p = feed_all("anthropic", [body])
    whole = build_adapter("anthropic", SETTINGS).parse_response(
        {**ANTHROPIC_WHOLE, "usage": {**usage, "output_tokens": 15}}
    )
    assert p.result().usage == whole.usage
    assert (whole.usage.prompt_tokens, whole.usage.cached_prompt_tokens, whole.usage.completion_tokens) == (
        350,
        300,
        15,
    )


def test_openai_tool_call_fragments() -> None:
    deltas, p = feed_all("openai", [OPENAI_TOOL])
    assert deltas[0] == ToolCallDelta(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", "")
    assert all(d == ToolCallDelta(0, None, None, d.arguments) for d in deltas[1:])  # type: ignore[union-attr]
    assert "".join(d.arguments for d in deltas if isinstance(d, ToolCallDelta)) == '{"location":"Paris, France"}'
    assert p.result().finish_reason == "tool_calls"


def test_anthropic_tool_use_blocks_are_numbered_among_tool_calls() -> None:
    deltas, p = feed_all("anthropic", [ANTHROPIC_TOOL])
    text = [d for d in deltas if isinstance(d, TextDelta)]
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert "".join(t.text for t in text) == "Okay, let's check the weather for San Francisco, CA:"
    assert calls[0] == ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", "")  # block 1, tool call 0
    assert {c.index for c in calls} == {0}
    assert json.loads("".join(c.arguments for c in calls)) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    result = p.result()
    assert (result.finish_reason, result.usage.prompt_tokens, result.usage.completion_tokens) == ("tool_calls", 472, 89)


def test_a_second_anthropic_tool_call_gets_index_1() -> None:
    tool = _anthropic(
        "content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}}
    )
    args = _anthropic("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": "{}"})
    body = ANTHROPIC_TOOL.replace(b"event: message_delta", tool + args + b"event: message_delta")
    deltas, _ = feed_all("anthropic", [body])
    assert deltas[-2:] == [ToolCallDelta(1, "toolu_2", "f", ""), ToolCallDelta(1, None, None, "{}")]


def test_utf8_cut_inside_a_character_comments_and_crlf() -> None:
    body = b": keep-alive\r\n\r\n" + OPENAI_TEXT.replace(
        b'"Hello"', '"h\u00e9llo \u4f60\u597d \U0001f600"'.encode()
    ).replace(b"\n", b"\r\n")
    for pieces in every_split(body):
        deltas, _ = feed_all("openai", pieces)
        assert deltas == [TextDelta("h\u00e9llo \u4f60\u597d \U0001f600")]


def test_nothing_before_the_end_marker_is_not_done_and_result_is_what_was_read() -> None:
    cut = OPENAI_TEXT.index(b'"finish_reason":"stop"')
    cut = OPENAI_TEXT.rindex(b"data: ", 0, cut)
    deltas, p = feed_all("openai", [OPENAI_TEXT[:cut]])
    assert deltas == [TextDelta("Hello")] and not p.done
    assert (p.result().content, p.result().usage.total_tokens) == ("Hello", 0)


@pytest.mark.parametrize(
    ("error", "etype", "retryable"),
    [
        (
            {"message": "The server had an error", "type": "server_error", "code": None},
            ErrorType.SERVICE_UNAVAILABLE,
            True,
        ),
        (
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            ErrorType.RATE_LIMIT,
            True,
        ),
        (
            {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"},
            ErrorType.RATE_LIMIT,
            False,
        ),
        ({"message": "bad", "type": "invalid_request_error", "code": None}, ErrorType.INVALID_REQUEST, False),
    ],
)
def test_openai_error_mid_stream_is_mapped(error: dict[str, Any], etype: ErrorType, retryable: bool) -> None:
    cut = OPENAI_TEXT.index(b"data: [DONE]")
    p = parser("openai")
    p.feed(OPENAI_TEXT[:cut])
    with pytest.raises(GatewayError) as caught:
        p.feed(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
    assert (caught.value.type, caught.value.retryable, caught.value.provider) == (etype, retryable, "openai")
    assert caught.value.message == error["message"]


@pytest.mark.parametrize(
    ("etype_in", "etype", "retryable"),
    [
        ("overloaded_error", ErrorType.SERVICE_UNAVAILABLE, True),
        ("api_error", ErrorType.SERVICE_UNAVAILABLE, True),
        ("rate_limit_error", ErrorType.RATE_LIMIT, True),
        ("invalid_request_error", ErrorType.INVALID_REQUEST, False),
    ],
)
def test_anthropic_error_event_is_mapped(etype_in: str, etype: ErrorType, retryable: bool) -> None:
    p = parser("anthropic")
    p.feed(ANTHROPIC_TEXT[: ANTHROPIC_TEXT.index(b"event: content_block_stop")])
    with pytest.raises(GatewayError) as caught:
        p.feed(ANTHROPIC_OVERLOADED.replace(b"overloaded_error", etype_in.encode()))
    assert (caught.value.type, caught.value.retryable, caught.value.provider) == (etype, retryable, "anthropic")


def test_overloaded_event_maps_as_a_529_answer_does() -> None:
    adapter = build_adapter("anthropic", SETTINGS)
    p = adapter.stream_parser()
    with pytest.raises(GatewayError) as caught:
        p.feed(ANTHROPIC_OVERLOADED)
    whole = adapter.map_error(529, json.loads(ANTHROPIC_OVERLOADED.split(b"data: ")[1]), {})
    assert caught.value.to_dict() == whole.to_dict()


def test_an_event_that_is_not_json_is_a_retryable_malformed_answer() -> None:
    with pytest.raises(GatewayError) as caught:
        parser("openai").feed(b"data: {not json\n\n")
    assert (caught.value.type, caught.value.retryable) == (ErrorType.INTERNAL, True)


def test_sse_framing() -> None:
    sse = SseSplitter()
    assert sse.feed(b"event: a\r") == []
    assert sse.feed(b"\ndata:x\rdata: y\n\n: comment\n\nid: 1\ndata\n\nretry: 5\ndata: z") == [SseEvent("a", b"x\ny")]
    assert sse.feed(b"\r\n\r\n") == [SseEvent("message", b"z")]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_requests_ask_for_a_stream_only_when_the_call_does(provider: str) -> None:
    adapter = build_adapter(provider, SETTINGS)
    call = ProviderCall(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    plain = adapter.build_request(call, "sk-test-000000")
    streamed = adapter.build_request(dataclasses.replace(call, stream=True), "sk-test-000000")
    assert "stream" not in (plain.json or {})
    assert (streamed.json or {})["stream"] is True
    extra = {k: v for k, v in (streamed.json or {}).items() if k not in (plain.json or {})}
    if provider == "openai":
        assert extra == {"stream": True, "stream_options": {"include_usage": True}}
        assert streamed.headers["Accept"] == "text/event-stream"
    else:
        assert extra == {"stream": True}
