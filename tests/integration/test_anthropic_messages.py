"""The official `anthropic` package against `POST /v1/messages`, with only base_url and the key changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import Anthropic

from devstack.stack import Stack
from tests.integration.conftest import Upstream
from tests.provider_examples import PNG_1PX, WEATHER_TOOL

MODEL = "claude-3-haiku-20240307"
TOOL: Any = {
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
ASK: Any = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture
def claude(sim: Stack) -> Iterator[Anthropic]:
    client = Anthropic(base_url=sim.api_url, api_key=sim.token(sub="anthropic-user"), max_retries=0, timeout=30)
    try:
        yield client
    finally:
        client.close()


def test_a_message_with_a_system_prompt(claude: Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, system="You are terse.", messages=[{"role": "user", "content": "Hello!"}]
    )
    reply = raw.parse()
    assert raw.headers["x-gateway-provider"] == "anthropic"
    assert reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert reply.content[0].type == "text" and reply.content[0].text.startswith("Simulated anthropic reply to: Hello!")
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


def test_tools_and_a_tool_result(claude: Anthropic, upstream: Upstream) -> None:
    first = claude.messages.create(model=MODEL, max_tokens=256, messages=ASK, tools=[TOOL])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "sample"}
    second = claude.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[TOOL],
        messages=[
            *ASK,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "14 degrees"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and "14 degrees" in second.content[0].text
    sent = upstream.requests("anthropic")[-1]["json"]["messages"]
    assert sent[1]["content"][-1] == {"type": "tool_use", "id": use.id, "name": "get_weather", "input": use.input}
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": use.id, "content": "14 degrees"}]


def test_an_image_and_cache_control_reach_anthropic_untouched(claude: Anthropic, upstream: Upstream) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
    system = [{"type": "text", "text": "A long manual to cache.", "cache_control": {"type": "ephemeral"}}]
    reply = claude.messages.create(
        model=MODEL,
        max_tokens=64,
        system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "Describe this image."}]}],  # type: ignore[list-item]
    )
    assert reply.content[0].type == "text"
    sent = upstream.requests("anthropic")[-1]["json"]
    assert sent["system"] == system
    assert sent["messages"][0]["content"][0] == image


def test_failing_over_to_openai_answers_in_anthropics_shape(claude: Anthropic, upstream: Upstream) -> None:
    upstream.fault("anthropic", mode="status", status=529, count=1000)
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=ASK, tools=[TOOL])
    assert raw.headers["x-gateway-provider"] == "openai"
    reply = raw.parse()
    assert reply.stop_reason == "tool_use"
    use = next(b for b in reply.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "sample"}


def test_the_sdks_stream_helper_assembles_the_message(claude: Anthropic, upstream: Upstream) -> None:
    upstream.config(stream_chunks=6)
    whole = claude.messages.create(model=MODEL, max_tokens=64, messages=ASK)
    with claude.messages.stream(model=MODEL, max_tokens=64, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert upstream.requests("anthropic")[-1]["json"]["stream"] is True


def test_streamed_tool_use_arrives_as_input_json_deltas(claude: Anthropic, upstream: Upstream) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=256, messages=ASK, tools=[TOOL]) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert "input_json" in kinds
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "sample"}
    assert final.stop_reason == "tool_use"


def test_a_stream_failed_over_to_openai_keeps_anthropics_events(claude: Anthropic, upstream: Upstream) -> None:
    upstream.fault("anthropic", mode="status", status=529, count=1000)
    with claude.messages.stream(model=MODEL, max_tokens=256, messages=ASK, tools=[TOOL]) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"location": "sample"}
    assert upstream.requests("openai")[-1]["json"]["stream"] is True  # OpenAI's tool_calls deltas, translated


def test_an_openai_client_streams_tool_calls_from_claude(sim: Stack, upstream: Upstream) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{sim.api_url}/v1", api_key=sim.token(), max_retries=0)
    weather: Any = WEATHER_TOOL
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=[weather]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.function.arguments == '{"location":"sample"}'
    assert final.choices[0].finish_reason == "tool_calls"
    client.close()


def test_a_bearer_token_works_and_a_wrong_key_is_refused(sim: Stack) -> None:
    with Anthropic(base_url=sim.api_url, auth_token=sim.token(sub="bearer-user"), max_retries=0) as bearer:
        assert bearer.messages.create(model=MODEL, max_tokens=16, messages=ASK).content
    with (
        Anthropic(base_url=sim.api_url, api_key="not-a-jwt", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        wrong.messages.create(model=MODEL, max_tokens=16, messages=ASK)
    assert denied.value.status_code == 401
    assert isinstance(denied.value.body, dict) and denied.value.body["type"] == "error"


def test_an_unknown_anthropic_version_is_a_400_naming_it(sim: Stack) -> None:
    headers = {"x-api-key": sim.token(sub="version-user"), "anthropic-version": "2099-01-01"}
    body = {"model": MODEL, "max_tokens": 16, "messages": ASK}
    resp = httpx.post(f"{sim.api_url}/v1/messages", headers=headers, json=body, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["message"].startswith("anthropic-version:")


def test_models_list_in_anthropics_shape(claude: Anthropic) -> None:
    ids = [m.id for m in claude.models.list()]
    assert any(i.startswith("claude-") for i in ids) and any(i.startswith("gpt-") for i in ids)
