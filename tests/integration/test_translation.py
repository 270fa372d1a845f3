"""What the gateway really sends each provider (read back from the simulator's recorder), and how
the provider's answer comes back: finish reasons and usage in the gateway's own terms."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from devstack.stack import Stack

COMPLETIONS = "/api/v1/llm/chat/completions"


def complete(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(COMPLETIONS, json=body)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def sent(upstream: Any, provider: str, request_id: str) -> dict[str, Any]:
    """The one call the gateway made to `provider` for this request, as the provider received it."""
    calls = upstream.requests(provider, request_id)
    assert len(calls) == 1, calls
    call: dict[str, Any] = calls[0]
    return call


def fingerprint(secret: str) -> str:
    """How the simulator's recorder shows a key."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def test_openai_gets_the_request_as_written(api: httpx.Client, upstream: Any, stack: Stack) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    body = {
        "messages": messages,
        "model": "gpt-4",
        "maxTokens": 50,
        "temperature": 0.7,
        "topP": 0.9,
        "stop": "END",
        "user": "user-42",
    }
    data = complete(api, body)

    call = sent(upstream, "openai", data["id"])
    assert call["json"] == {
        "model": "gpt-4",
        "messages": messages,
        "max_tokens": 50,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-42",
    }
    headers = call["headers"]
    assert headers["authorization"] == f"Bearer {fingerprint(stack.env['OPENAI_API_KEY'])}"
    assert headers["content-type"] == "application/json"
    assert "openai-organization" not in headers  # OPENAI_ORGANIZATION is unset in this stack
    assert upstream.requests("anthropic") == []


def test_anthropic_gets_a_translated_request(api: httpx.Client, upstream: Any, stack: Stack) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "How are you?"},
            {"role": "system", "content": "Answer in English."},
            {"role": "assistant", "content": "Fine."},
            {"role": "assistant", "content": "And you?"},
            {"role": "user", "content": "Tell me more"},
        ],
        "model": "claude-3-haiku-20240307",
        "temperature": 1.5,
        "stop": ["END", "STOP"],
        "user": "user-42",
    }
    data = complete(api, body)

    call = sent(upstream, "anthropic", data["id"])
    assert call["json"] == {
        "model": "claude-3-haiku-20240307",
        # system messages are lifted out; same-role neighbours are merged so roles alternate
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Hi\n\nHow are you?"},
            {"role": "assistant", "content": "Fine.\n\nAnd you?"},
            {"role": "user", "content": "Tell me more"},
        ],
        "max_tokens": 1024,  # Anthropic requires it: ANTHROPIC_DEFAULT_MAX_TOKENS when the caller gave none
        "temperature": 0.75,  # 0..2 mapped onto Anthropic's 0..1
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
    }
    headers = call["headers"]
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-api-key"] == fingerprint(stack.env["ANTHROPIC_API_KEY"])
    assert "authorization" not in headers
    assert data["provider"] == "anthropic" and data["finishReason"] == "stop"
    assert data["content"].startswith("Simulated anthropic reply to: Tell me more")
    assert upstream.requests("openai") == []


@pytest.mark.parametrize(("given", "expected"), [(0, 0), (0.7, 0.35), (1, 0.5), (2, 1)])
def test_anthropic_temperature_scale(api: httpx.Client, upstream: Any, given: float, expected: float) -> None:
    data = complete(
        api, {"messages": [{"role": "user", "content": "Hi"}], "provider": "anthropic", "temperature": given}
    )
    assert sent(upstream, "anthropic", data["id"])["json"]["temperature"] == pytest.approx(expected)


def test_anthropic_conversation_must_start_with_the_user(api: httpx.Client, upstream: Any) -> None:
    body = {
        "messages": [{"role": "system", "content": "Go on."}, {"role": "assistant", "content": "Once upon a time "}],
        "provider": "anthropic",
        "maxTokens": 20,
    }
    data = complete(api, body)
    assert sent(upstream, "anthropic", data["id"])["json"]["messages"] == [
        {"role": "user", "content": "(continue)"},
        {"role": "assistant", "content": "Once upon a time"},  # a prefill may not end with whitespace
    ]
    assert data["usage"]["completionTokens"] <= 20


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_finish_reason_length(api: httpx.Client, upstream: Any, provider: str) -> None:
    data = complete(
        api, {"messages": [{"role": "user", "content": "Write a long story"}], "provider": provider, "maxTokens": 3}
    )
    assert data["finishReason"] == "length"  # OpenAI's "length", Anthropic's "max_tokens"
    assert data["content"] == f"Simulated {provider} reply to: Write a long story"[:12]
    usage = data["usage"]
    assert usage["completionTokens"] == 3
    assert usage["promptTokens"] > 0
    assert usage["totalTokens"] == usage["promptTokens"] + 3
    call = sent(upstream, provider, data["id"])["json"]
    assert call["max_tokens"] == 3


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_finish_reason_stop_sequence(api: httpx.Client, upstream: Any, provider: str) -> None:
    data = complete(api, {"messages": [{"role": "user", "content": "Hi"}], "provider": provider, "stop": ["reply"]})
    assert data["finishReason"] == "stop"  # Anthropic's "stop_sequence" is a plain stop
    assert data["content"] == f"Simulated {provider} "
    assert data["usage"]["completionTokens"] == 5  # 20 characters at 4 a token


def test_openai_organization_header(tuned: Any, tuned_api: httpx.Client, tuned_stack: Stack) -> None:
    organization = tuned_stack.env["OPENAI_ORGANIZATION"]
    openai_id = complete(tuned_api, {"messages": [{"role": "user", "content": "Hi"}], "provider": "openai"})["id"]
    anthropic_id = complete(tuned_api, {"messages": [{"role": "user", "content": "Hi"}], "provider": "anthropic"})["id"]

    assert sent(tuned, "openai", openai_id)["headers"]["openai-organization"] == organization
    assert "openai-organization" not in sent(tuned, "anthropic", anthropic_id)["headers"]
