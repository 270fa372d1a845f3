"""The translation matrix of tools, images, JSON output and the rest, OpenAI's shapes <-> Anthropic's.

Fixtures are written after the providers' public API reference examples (written from their
documented examples, not fetched): OpenAI's function-calling guide (`get_weather`, `call_12345xyz`)
and vision guide (the Wisconsin boardwalk image), its Chat Completions reference (`n`, `logprobs`,
`usage` details); Anthropic's tool-use guide (`get_weather`, `toolu_01A09q90qw90lq917835lq9`) and
vision guide (base64 and URL image sources), and its prompt-caching guide (`cache_control`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from api.openai_shapes import chat_completion, parse_chat_body
from shared.admission import build_payload
from shared.capabilities import unserved
from shared.errors import GatewayError
from shared.schemas import CalledTool, ChatRequest, ProviderCall
from shared.settings import Settings
from tests.provider_examples import PNG_1PX, WEATHER_TOOL
from workers.providers.anthropic import AnthropicAdapter
from workers.providers.anthropic_translate import JSON_TOOL
from workers.providers.openai import OpenAIAdapter

BOARDWALK = (
    "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/"
    "2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
)
TOOL_USE_ANSWER = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-haiku-20240307",
    "content": [
        {
            "type": "text",
            "text": "I need to use get_weather, and the user wants SF, which is likely San Francisco, CA.",
        },
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 384, "output_tokens": 97},
}


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def payload_of(body: dict[str, Any], settings: Settings) -> tuple[str, ProviderCall]:
    """An OpenAI request body as the queue carries it: (provider, call)."""
    payload = build_payload(parse_chat_body(body).to_chat_request(), settings, kind="sync")
    return payload.provider, payload.call


def anthropic_body(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    _, call = payload_of({"provider": "anthropic", **body}, settings)
    wire = AnthropicAdapter(settings).build_request(call, "k").json
    assert wire is not None
    return wire


def openai_body(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    _, call = payload_of({"provider": "openai", **body}, settings)
    wire = OpenAIAdapter(settings).build_request(call, "k").json
    assert wire is not None
    return wire


@pytest.mark.parametrize(
    ("openai_choice", "anthropic_choice"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tools_and_tool_choice_to_anthropic(
    settings: Settings, openai_choice: Any, anthropic_choice: dict[str, Any]
) -> None:
    wire = anthropic_body(
        {
            "model": "claude-3-haiku-20240307",
            "messages": [{"role": "user", "content": "What is the weather like in Paris today?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": openai_choice,
        },
        settings,
    )
    assert wire["tools"] == [
        {
            "name": "get_weather",
            "description": "Get current temperature for a given location.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert wire["tool_choice"] == anthropic_choice


def test_parallel_tool_calls_off_to_anthropic(settings: Settings) -> None:
    wire = anthropic_body(
        {"model": "claude-3-haiku", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL]}
        | {"parallel_tool_calls": False},
        settings,
    )
    assert wire["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def conversation_with_tool_results() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "developer", "content": "Answer in one sentence."},
        {"role": "user", "content": "What's the weather in Paris and Bogotá?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_12345xyz",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                },
                {
                    "id": "call_67890abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Bogotá, Colombia"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14°C"},
        {"role": "tool", "tool_call_id": "call_67890abc", "content": "18°C"},
    ]


def test_tool_calls_and_results_to_anthropic_blocks(settings: Settings) -> None:
    wire = anthropic_body(
        {"model": "claude-3-haiku", "messages": conversation_with_tool_results(), "tools": [WEATHER_TOOL]}, settings
    )
    assert wire["system"] == "You are a weather bot.\n\nAnswer in one sentence."
    assert wire["messages"] == [
        {"role": "user", "content": "What's the weather in Paris and Bogotá?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_12345xyz",
                    "name": "get_weather",
                    "input": {"location": "Paris, France"},
                },
                {
                    "type": "tool_use",
                    "id": "call_67890abc",
                    "name": "get_weather",
                    "input": {"location": "Bogotá, Colombia"},
                },
            ],
        },
        {
            # every result of the calls in the one user turn after them, ids kept
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_12345xyz", "content": "14°C"},
                {"type": "tool_result", "tool_use_id": "call_67890abc", "content": "18°C"},
            ],
        },
    ]


def test_tool_calls_and_results_to_openai_as_sent(settings: Settings) -> None:
    messages = conversation_with_tool_results()
    wire = openai_body({"model": "gpt-4o", "messages": copy.deepcopy(messages), "tools": [WEATHER_TOOL]}, settings)
    assert wire["messages"] == messages
    assert wire["tools"] == [WEATHER_TOOL]


def test_images_to_anthropic_sources(settings: Settings) -> None:
    wire = anthropic_body(
        {
            "model": "claude-3-haiku",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What's in these images?"},
                        {"type": "image_url", "image_url": {"url": BOARDWALK}},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_1PX}", "detail": "low"},
                        },
                    ],
                }
            ],
        },
        settings,
    )
    assert wire["messages"][0]["content"] == [
        {"type": "text", "text": "What's in these images?"},
        {"type": "image", "source": {"type": "url", "url": BOARDWALK}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
    ]


def test_cache_control_reaches_anthropic_untouched_and_openai_never(settings: Settings) -> None:
    ephemeral = {"type": "ephemeral"}
    body = {
        "model": "claude-3-haiku",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "A long manual.", "cache_control": ephemeral}]},
            {"role": "user", "content": [{"type": "text", "text": "Summarise it.", "cache_control": ephemeral}]},
        ],
        "tools": [{**WEATHER_TOOL, "cache_control": ephemeral}],
    }
    wire = anthropic_body(copy.deepcopy(body), settings)
    assert wire["system"] == [{"type": "text", "text": "A long manual.", "cache_control": ephemeral}]
    assert wire["messages"][0]["content"] == [{"type": "text", "text": "Summarise it.", "cache_control": ephemeral}]
    assert wire["tools"][0]["cache_control"] == ephemeral
    sent = json.dumps(openai_body({**copy.deepcopy(body), "model": "gpt-4o"}, settings))
    assert "cache_control" not in sent


def test_stop_to_stop_sequences(settings: Settings) -> None:
    wire = anthropic_body(
        {"model": "claude-3-haiku", "messages": [{"role": "user", "content": "count"}], "stop": ["\n\nHuman:", "END"]},
        settings,
    )
    assert wire["stop_sequences"] == ["\n\nHuman:", "END"]


def test_json_schema_response_format_becomes_a_forced_tool_and_its_input_the_answer(settings: Settings) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "date": {"type": "string"}},
        "required": ["name", "date"],
        "additionalProperties": False,
    }
    wire = anthropic_body(
        {
            "model": "claude-3-haiku",
            "messages": [{"role": "user", "content": "Alice and Bob are going to a science fair on Friday."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "event", "schema": schema, "strict": True},
            },
        },
        settings,
    )
    assert wire["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    assert wire["tools"][-1]["input_schema"] == schema
    answer = {
        **TOOL_USE_ANSWER,
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": JSON_TOOL,
                "input": {"name": "Science fair", "date": "Friday"},
            }
        ],
    }
    result = AnthropicAdapter(settings).parse_response(answer)
    assert json.loads(result.content) == {"name": "Science fair", "date": "Friday"}
    assert result.finish_reason == "stop" and result.tool_calls is None


def test_anthropic_tool_use_answer_to_openai_tool_calls(settings: Settings) -> None:
    result = AnthropicAdapter(settings).parse_response(TOOL_USE_ANSWER)
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        CalledTool("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"location":"San Francisco, CA","unit":"celsius"}')
    ]
    stored = {"id": "r1", "content": result.content, "finishReason": result.finish_reason, **result.answer_extras()}
    choice = chat_completion(stored)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9" and call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}


@pytest.mark.parametrize(
    ("stop_reason", "finish"), [("max_tokens", "length"), ("end_turn", "stop"), ("tool_use", "tool_calls")]
)
def test_anthropic_finish_reasons(settings: Settings, stop_reason: str, finish: str) -> None:
    body = {**TOOL_USE_ANSWER, "stop_reason": stop_reason}
    assert AnthropicAdapter(settings).parse_response(body).finish_reason == finish


def test_anthropic_cache_usage_is_kept_apart(settings: Settings) -> None:
    body = {
        **TOOL_USE_ANSWER,
        "usage": {
            "input_tokens": 21,
            "cache_creation_input_tokens": 188086,
            "cache_read_input_tokens": 0,
            "output_tokens": 393,
        },
    }
    usage = AnthropicAdapter(settings).parse_response(body).usage
    assert (usage.prompt_tokens, usage.cache_write_tokens, usage.cached_prompt_tokens) == (188107, 188086, 0)


OPENAI_N2_LOGPROBS = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1702685778,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": {
                "content": [{"token": "Hello", "logprob": -0.31725305, "bytes": [72, 101], "top_logprobs": []}]
            },
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 192},
    },
}


def test_openai_answer_keeps_every_choice_refusal_logprobs_and_usage_details(settings: Settings) -> None:
    result = OpenAIAdapter(settings).parse_response(OPENAI_N2_LOGPROBS)
    stored = {
        "id": "r1",
        "content": result.content,
        "finishReason": result.finish_reason,
        "usage": result.usage.to_api(),
        **result.answer_extras(),
    }
    out = chat_completion(stored)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["logprobs"] == OPENAI_N2_LOGPROBS["choices"][0]["logprobs"]  # type: ignore[index]
    assert out["choices"][1]["message"]["refusal"] == "I'm sorry, I can't help with that."
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 1920}
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": 192}


def test_openai_options_are_passed_as_sent(settings: Settings) -> None:
    options = {
        "n": 2,
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 7,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "service_tier": "default",
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
        "parallel_tool_calls": False,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
    wire = openai_body({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **options}, settings)
    assert {k: wire[k] for k in options} == {**options, "logit_bias": {"50256": -100.0}}


def test_legacy_functions_become_tools_and_answer_as_function_call(settings: Settings) -> None:
    body = parse_chat_body(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
                {"role": "function", "name": "get_weather", "content": "14°C"},
            ],
            "functions": [WEATHER_TOOL["function"]],
            "function_call": {"name": "get_weather"},
        }
    )
    request = body.to_chat_request()
    assert request.tool_choice is not None and request.tools is not None
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]
    stored = {
        "id": "r",
        "content": "",
        "finishReason": "tool_calls",
        "toolCalls": [CalledTool("", "f", "{}").to_wire()],
    }
    choice = chat_completion(stored, legacy_functions=body.legacy_functions)["choices"][0]
    assert choice["message"]["function_call"] == {"name": "f", "arguments": "{}"}
    assert choice["finish_reason"] == "function_call"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 1}, "seed"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_what_anthropic_cannot_do_routes_to_openai_or_is_refused(
    settings: Settings, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "claude-3-haiku", "messages": [{"role": "user", "content": "hi"}], **extra}
    provider, call = payload_of(body, settings)
    assert provider == "openai" and unserved("anthropic", call) == param
    with pytest.raises(GatewayError) as refused:
        payload_of({**body, "provider": "anthropic"}, settings)
    assert refused.value.status == 400 and refused.value.param == param


def test_plain_request_stays_on_its_family(settings: Settings) -> None:
    provider, call = payload_of({"model": "claude-3-haiku", "messages": [{"role": "user", "content": "hi"}]}, settings)
    assert provider == "anthropic" and call.options is None and call.messages == [{"role": "user", "content": "hi"}]


def test_tool_arguments_that_are_not_json_are_refused_for_anthropic(settings: Settings) -> None:
    messages = conversation_with_tool_results()
    messages[3]["tool_calls"][0]["function"]["arguments"] = "not json"
    with pytest.raises(GatewayError) as refused:
        anthropic_body({"model": "claude-3-haiku", "messages": messages}, settings)
    assert refused.value.param == "messages[3].tool_calls[0].function.arguments"


def test_a_request_no_provider_serves_is_refused_naming_a_parameter(settings: Settings) -> None:
    request = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "model": "claude-3-haiku", "n": 2, "topK": 5}
    )
    with pytest.raises(GatewayError) as refused:
        build_payload(request, settings, kind="sync")
    assert refused.value.status == 400 and refused.value.param == "n" and "top_k" in refused.value.message


def test_an_unavailable_provider_is_not_swapped_for_one_that_cannot_serve(settings: Settings) -> None:
    request = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o", "n": 2})
    payload = build_payload(request, settings, kind="sync", unavailable=frozenset({"openai"}))
    assert payload.provider == "openai"
