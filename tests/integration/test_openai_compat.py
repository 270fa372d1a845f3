"""The official `openai` package against the gateway, with only base_url and api_key changed."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from devstack.stack import Stack


def test_chat_completion_through_the_sdk(sdk: OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="gpt-4",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello, how are you?"},
        ],
        max_tokens=20,
        temperature=0.2,
    )
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-4"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert (
        reply.usage is not None
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )


def test_a_claude_model_is_routed_to_anthropic_and_answers_in_openai_shape(sdk: OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="claude-3-haiku-20240307", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
    )
    reply = raw.parse()
    assert reply.model == "claude-3-haiku-20240307"
    assert reply.choices[0].message.content
    assert raw.headers["x-gateway-provider"] == "anthropic"
    assert float(raw.headers["x-gateway-cost-usd"]) > 0


def test_errors_arrive_as_the_sdk_exceptions(sdk: OpenAI, sim: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "temperature"
    assert bad.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as streamed:  # an error before the first delta: no stream
        sdk.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True, temperature=5
        )
    assert streamed.value.status_code == 400 and "temperature" in str(streamed.value.message)

    wrong_key = OpenAI(base_url=f"{sim.api_url}/v1", api_key="not-a-jwt", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong_key.models.list()
    assert denied.value.status_code == 401
    wrong_key.close()


def test_a_provider_refusal_keeps_its_status_and_openai_error_shape(sdk: OpenAI, sim: Stack) -> None:
    sim.sim("POST", "/_control/faults", json={"provider": "openai", "mode": "status", "status": 400, "count": 1})
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 400
    assert isinstance(refused.value.body, dict) and set(refused.value.body) == {"message", "type", "param", "code"}


def test_models_list(sdk: OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert "gpt-4" in models and models["gpt-4"].owned_by == "openai"
    assert any(m.owned_by == "anthropic" for m in models.values())
    assert sdk.models.retrieve("gpt-4").id == "gpt-4"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_unknown_v1_routes_answer_in_openai_error_shape(sim: Stack) -> None:
    resp = httpx.get(f"{sim.api_url}/v1/nothing-here", headers={"Authorization": f"Bearer {sim.token()}"})
    assert resp.status_code == 404
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
