"""Tools, images, JSON output, n and logprobs through the live stack, with the official `openai` package
as the client: the simulator checks each provider's real wire format and answers in it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import OpenAI
from pydantic import BaseModel

from devstack.stack import Stack
from tests.integration.conftest import Upstream
from tests.provider_examples import PNG_1PX, WEATHER_TOOL

ASK: Any = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def last_body(upstream: Upstream, provider: str) -> dict[str, Any]:
    body: dict[str, Any] = upstream.requests(provider)[-1]["json"]
    return body


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-haiku-20240307"])
def test_a_tool_call_and_its_follow_up_tool_message(sdk: OpenAI, upstream: Upstream, model: str) -> None:
    first = sdk.chat.completions.create(model=model, messages=ASK, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "sample"}

    follow_up: Any = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "14 degrees and sunny"},
    ]
    second = sdk.chat.completions.create(model=model, messages=follow_up, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert "14 degrees and sunny" in (second.choices[0].message.content or "")
    if model.startswith("claude"):  # the simulator checked the blocks; the ids made the round trip
        sent = last_body(upstream, "anthropic")["messages"]
        assert sent[1]["content"][0] == {
            "type": "tool_use",
            "id": call.id,
            "name": "get_weather",
            "input": {"location": "sample"},
        }
        assert sent[2]["content"][0]["tool_use_id"] == call.id


class Event(BaseModel):
    name: str
    date: str
    participants: list[str]


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-haiku-20240307"])
def test_parse_with_a_pydantic_model(sdk: OpenAI, model: str) -> None:
    completion = sdk.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Alice and Bob are going to a science fair on Friday."}],
        response_format=Event,
    )
    assert completion.choices[0].message.parsed == Event(name="sample", date="sample", participants=["sample"])


@pytest.mark.parametrize(("model", "provider"), [("gpt-4o", "openai"), ("claude-3-haiku-20240307", "anthropic")])
def test_images_arrive_in_each_providers_format(sdk: OpenAI, upstream: Upstream, model: str, provider: str) -> None:
    data_url = f"data:image/png;base64,{PNG_1PX}"
    reply = sdk.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/boardwalk.jpg"}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content
    parts = last_body(upstream, provider)["messages"][0]["content"]
    if provider == "openai":
        assert parts[1] == {"type": "image_url", "image_url": {"url": data_url}}
    else:
        assert parts[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
        assert parts[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/boardwalk.jpg"}}


def test_n_and_logprobs_route_to_openai_even_for_a_claude_model(sdk: OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="claude-3-haiku-20240307", messages=ASK, n=2, logprobs=True, top_logprobs=2
    )
    reply = raw.parse()
    assert raw.headers["x-gateway-provider"] == "openai"
    assert [c.index for c in reply.choices] == [0, 1]
    logprobs = reply.choices[1].logprobs
    assert logprobs is not None and logprobs.content and len(logprobs.content[0].top_logprobs) == 2


def test_tools_to_claude_failing_over_to_openai_can_be_answered_by_either(
    sdk: OpenAI, upstream: Upstream, sim: Stack
) -> None:
    upstream.fault("anthropic", mode="status", status=529, count=1000)
    raw = sdk.chat.completions.with_raw_response.create(model="claude-3-haiku", messages=ASK, tools=[WEATHER_TOOL])
    assert raw.headers["x-gateway-provider"] == "openai"
    message = raw.parse().choices[0].message
    assert message.tool_calls
    follow_up: Any = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "14 degrees and sunny"},
    ]
    upstream.reset()
    for provider in ("anthropic", "openai"):
        raw = sdk.chat.completions.with_raw_response.create(
            model="claude-3-haiku", messages=follow_up, tools=[WEATHER_TOOL], extra_body={"provider": provider}
        )
        assert raw.headers["x-gateway-provider"] == provider
        assert "14 degrees and sunny" in (raw.parse().choices[0].message.content or "")


def test_a_request_only_openai_serves_is_not_failed_over_and_says_why(api: httpx.Client, upstream: Upstream) -> None:
    upstream.fault("openai", mode="status", status=503, count=1000)
    resp = api.post("/api/v1/llm/chat/completions", json={"messages": ASK, "model": "gpt-4o", "logprobs": True})
    assert resp.status_code == 503
    attempts = resp.json()["error"]["attempts"]
    assert {a["provider"] for a in attempts} == {"openai", "anthropic"}
    skipped = attempts[-1]
    assert skipped["provider"] == "anthropic" and skipped["error"]["param"] == "logprobs"
    assert upstream.calls("anthropic") == 0


def test_the_gateway_route_speaks_camel_case_tools(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/llm/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather where this photo was taken?"},
                        {"type": "image_url", "imageUrl": {"url": f"data:image/png;base64,{PNG_1PX}"}},
                    ],
                }
            ],
            "model": "claude-3-haiku",
            "tools": [WEATHER_TOOL],
            "toolChoice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["finishReason"] == "tool_calls"
    assert data["toolCalls"][0]["function"]["name"] == "get_weather"


def test_an_async_job_with_tools_answers_with_tool_calls(api: httpx.Client) -> None:
    body = {"messages": ASK, "model": "gpt-4o", "tools": [WEATHER_TOOL], "toolChoice": "required"}
    job = api.post("/api/v1/llm/jobs", json=body)
    assert job.status_code == 202, job.text
    view = api.get(f"/api/v1/llm/jobs/{job.json()['data']['id']}", params={"wait": 20}).json()["data"]
    assert view["status"] == "succeeded"
    assert view["result"]["toolCalls"][0]["function"]["name"] == "get_weather"
