"""Pure unit tests of the provider adapters: request building, parsing, error mapping (no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared.errors import ErrorType, GatewayError
from shared.schemas import CalledTool, ProviderCall
from shared.settings import Settings
from workers.providers import build_adapter
from workers.providers.anthropic import (
    AnthropicAdapter,
    map_temperature,
    translate_messages,
)
from workers.providers.openai import OpenAIAdapter
from workers.providers.translate import (
    map_transport_error,
    parse_duration,
    parse_retry_after,
    scrub,
)


def make_settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


@pytest.fixture
def oa() -> OpenAIAdapter:
    return OpenAIAdapter(make_settings(openai_organization="org-123"))


@pytest.fixture
def an() -> AnthropicAdapter:
    return AnthropicAdapter(make_settings(anthropic_version="2023-06-01", anthropic_default_max_tokens=777))


def call(**kw: Any) -> ProviderCall:
    base: dict[str, Any] = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(kw)
    return ProviderCall(**base)


def openai_error(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


# --------------------------------------------------------------------------------------- registry


def test_registry_builds_both_adapters() -> None:
    s = make_settings()
    assert build_adapter("openai", s).name == "openai"
    assert build_adapter("anthropic", s).name == "anthropic"


# ------------------------------------------------------------------------------- OpenAI requests


def test_openai_request_headers_and_body(oa: OpenAIAdapter) -> None:
    req = oa.build_request(
        call(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi", "name": "x"},
            ],
            max_tokens=50,
            temperature=1.5,
            top_p=0.9,
            stop=["END"],
            user="u-1",
            request_id="req-abc",
        ),
        "sk-test-key-123456",
    )
    assert req.method == "POST" and req.path == "/chat/completions"
    assert req.headers["Authorization"] == "Bearer sk-test-key-123456"
    assert req.headers["OpenAI-Organization"] == "org-123"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Request-ID"] == "req-abc"
    assert req.json == {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 50,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
    }
    json.dumps(req.json)  # serialisable


def test_openai_request_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_ORGANIZATION", raising=False)
    adapter = OpenAIAdapter(make_settings())
    req = adapter.build_request(call(), "k")
    assert "OpenAI-Organization" not in req.headers
    assert "X-Request-ID" not in req.headers
    assert req.json == {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_openai_reasoning_models_use_max_completion_tokens(oa: OpenAIAdapter) -> None:
    for model in ("o1-mini", "o3", "o4-mini", "gpt-5-mini"):
        body = oa.build_request(call(model=model, max_tokens=10), "k").json
        assert body is not None
        assert body["max_completion_tokens"] == 10 and "max_tokens" not in body
    body = oa.build_request(call(model="gpt-4o", max_tokens=10), "k").json
    assert body is not None and body["max_tokens"] == 10


def test_openai_probe(oa: OpenAIAdapter) -> None:
    req = oa.probe_request("sk-abc")
    assert (req.method, req.path, req.json) == ("GET", "/models", None)
    assert req.headers["Authorization"] == "Bearer sk-abc"
    assert req.headers["OpenAI-Organization"] == "org-123"


# -------------------------------------------------------------------------------- OpenAI parsing


OPENAI_OK: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello!",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
}


def test_openai_parse(oa: OpenAIAdapter) -> None:
    r = oa.parse_response(OPENAI_OK)
    assert r.content == "Hello!"
    assert r.finish_reason == "stop"
    assert r.model == "gpt-4o-2024-08-06"
    assert r.provider_id == "chatcmpl-abc123"
    assert (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.cached_prompt_tokens,
    ) == (19, 10, 8)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        (None, "stop"),
    ],
)
def test_openai_finish_reasons(oa: OpenAIAdapter, raw: str | None, expected: str) -> None:
    body = json.loads(json.dumps(OPENAI_OK))
    body["choices"][0]["finish_reason"] = raw
    assert oa.parse_response(body).finish_reason == expected


def test_openai_null_content_and_no_usage(oa: OpenAIAdapter) -> None:
    body = {
        "id": "x",
        "model": "gpt-4",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    r = oa.parse_response(body)
    assert r.content == "" and r.finish_reason == "tool_calls"
    assert r.tool_calls == [CalledTool("t", "f", "{}")]
    assert (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.cached_prompt_tokens,
    ) == (0, 0, 0)


def test_openai_refusal(oa: OpenAIAdapter) -> None:
    body = json.loads(json.dumps(OPENAI_OK))
    body["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    r = oa.parse_response(body)
    assert r.content == "I can't help with that." and r.finish_reason == "content_filter"


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "model": "gpt-4"},
        {"choices": []},
        {"choices": [{"finish_reason": "stop"}]},
        {"choices": [{"message": {"role": "assistant"}}]},
        {"choices": [{"message": {"content": 42}}]},
        [],
    ],
)
def test_openai_malformed(oa: OpenAIAdapter, body: Any) -> None:
    with pytest.raises(GatewayError) as ei:
        oa.parse_response(body)
    assert ei.value.type is ErrorType.INTERNAL and ei.value.retryable is True
    assert ei.value.provider == "openai"
    assert "Malformed openai response" in ei.value.message


# --------------------------------------------------------------------------------- OpenAI errors


def test_openai_401_invalid_key_scrubbed(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "Incorrect API key provided: sk-proj-abcdefghijklmnop1234. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    )
    e = oa.map_error(401, body, {})
    assert e.type is ErrorType.AUTHENTICATION and e.retryable is False and e.provider == "openai"
    assert "sk-proj-abcdefghijklmnop1234" not in e.message and "sk-***" in e.message
    assert e.message.startswith("Incorrect API key provided")


def test_openai_403(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    )
    e = oa.map_error(403, body, {})
    assert e.type is ErrorType.PERMISSION and e.retryable is False
    assert e.message == "Country, region, or territory not supported"


def test_openai_429_insufficient_quota_not_retryable(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    )
    e = oa.map_error(429, body, {"retry-after": "20"})
    assert e.type is ErrorType.RATE_LIMIT and e.retryable is False and e.retry_after is None


def test_openai_429_rate_limit_retry_after(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "Rate limit reached for gpt-4 in organization org-123 on tokens per min (TPM): Limit 10000, Used 9000, "
        "Requested 2000. Please try again in 6ms.",
        "tokens",
        "rate_limit_exceeded",
    )
    e = oa.map_error(429, body, {"Retry-After": "1.5"})
    assert e.type is ErrorType.RATE_LIMIT and e.retryable is True and e.retry_after == 1.5
    assert oa.map_error(429, body, {"retry-after-ms": "250", "retry-after": "1"}).retry_after == 0.25


def test_openai_429_reset_headers(oa: OpenAIAdapter) -> None:
    body = openai_error("Rate limit reached", "requests", "rate_limit_exceeded")
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "1000",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert oa.map_error(429, body, headers).retry_after == 360.0
    headers = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "20ms"}
    assert oa.map_error(429, body, headers).retry_after == pytest.approx(0.02)
    assert oa.map_error(429, body, {}).retry_after is None


def test_openai_context_length(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. "
        "Please reduce the length of the messages.",
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    e = oa.map_error(400, body, {})
    assert e.type is ErrorType.CONTEXT_LENGTH and e.retryable is False and e.param == "messages"
    body2 = openai_error(
        "This model's maximum context length is 4097 tokens, however you requested 5000 tokens.",
        "invalid_request_error",
    )
    assert oa.map_error(400, body2, {}).type is ErrorType.CONTEXT_LENGTH


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            400,
            openai_error(
                "Invalid value for 'temperature'",
                "invalid_request_error",
                "invalid_value",
                "temperature",
            ),
        ),
        (
            404,
            openai_error(
                "The model `gpt-9` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
        ),
        (422, {"detail": "Unprocessable"}),
        (413, None),
    ],
)
def test_openai_invalid_request(oa: OpenAIAdapter, status: int, body: Any) -> None:
    e = oa.map_error(status, body, {})
    assert e.type is ErrorType.INVALID_REQUEST and e.retryable is False


def test_openai_invalid_request_keeps_message_and_param(oa: OpenAIAdapter) -> None:
    body = openai_error(
        "The model `gpt-9` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )
    e = oa.map_error(404, body, {})
    assert e.message == "The model `gpt-9` does not exist or you do not have access to it."


def test_openai_408_timeout(oa: OpenAIAdapter) -> None:
    e = oa.map_error(408, None, {})
    assert e.type is ErrorType.TIMEOUT and e.retryable is True


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520])
def test_openai_5xx(oa: OpenAIAdapter, status: int) -> None:
    body = openai_error(
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
    )
    e = oa.map_error(status, body, {})
    assert e.type is ErrorType.SERVICE_UNAVAILABLE and e.retryable is True


def test_openai_html_error_page(oa: OpenAIAdapter) -> None:
    e = oa.map_error(502, "<html><body>Bad gateway</body></html>", {})  # type: ignore[arg-type]
    assert e.type is ErrorType.SERVICE_UNAVAILABLE and e.message == "OpenAI returned HTTP 502"
    e = oa.map_error(503, None, {"retry-after": "3"})
    assert e.retry_after == 3.0


# ---------------------------------------------------------------------------- Anthropic requests


def test_anthropic_request_headers_and_body(an: AnthropicAdapter) -> None:
    req = an.build_request(
        call(
            model="claude-3-haiku-20240307",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "a"},
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
                {"role": "user", "content": "d"},
            ],
            max_tokens=100,
            temperature=1.0,
            stop=["END", "\n"],
            user="u-1",
            request_id="req-xyz",
        ),
        "sk-ant-api03-secret",
    )
    assert req.method == "POST" and req.path == "/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-api03-secret"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["X-Request-ID"] == "req-xyz"
    assert "Authorization" not in req.headers
    assert req.json == {
        "model": "claude-3-haiku-20240307",
        "max_tokens": 100,
        "system": "You are terse.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "a\n\nb"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ],
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }


def test_anthropic_defaults(an: AnthropicAdapter) -> None:
    req = an.build_request(call(model="claude-3-haiku-20240307"), "k")
    assert req.json == {
        "model": "claude-3-haiku-20240307",
        "max_tokens": 777,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert "X-Request-ID" not in req.headers


def test_anthropic_first_message_must_be_user() -> None:
    system, msgs = translate_messages(
        [
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "q"},
        ]
    )
    assert system == "s"
    assert msgs == [
        {"role": "user", "content": "(continue)"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "q"},
    ]
    system, msgs = translate_messages([{"role": "system", "content": "only system"}])
    assert system == "only system" and msgs == [{"role": "user", "content": "(continue)"}]


def test_anthropic_merges_and_trims_prefill() -> None:
    system, msgs = translate_messages(
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "x"},
            {"role": "assistant", "content": "y "},
        ]
    )
    assert system is None
    assert msgs == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "x\n\ny"},
    ]


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 0.0), (0.7, 0.35), (1.0, 0.5), (2.0, 1.0), (2.5, 1.0), (-1.0, 0.0)],
)
def test_anthropic_temperature_mapping(t: float, expected: float) -> None:
    assert map_temperature(t) == pytest.approx(expected)


def test_anthropic_top_p(an: AnthropicAdapter) -> None:
    body = an.build_request(call(top_p=0.8), "k").json
    assert body is not None and body["top_p"] == 0.8 and "temperature" not in body
    body = an.build_request(call(top_p=0.8, temperature=0.4), "k").json
    assert body is not None and body["temperature"] == pytest.approx(0.2) and "top_p" not in body


def test_anthropic_probe(an: AnthropicAdapter) -> None:
    req = an.probe_request("sk-ant-x")
    assert (req.method, req.path, req.json) == ("GET", "/v1/models", None)
    assert req.headers["x-api-key"] == "sk-ant-x" and req.headers["anthropic-version"] == "2023-06-01"


# ----------------------------------------------------------------------------- Anthropic parsing


ANTHROPIC_OK: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "abc"},
        {"type": "text", "text": "Hello, "},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        {"type": "text", "text": "world"},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 200,
        "output_tokens": 6,
    },
}


def test_anthropic_parse(an: AnthropicAdapter) -> None:
    r = an.parse_response(ANTHROPIC_OK)
    assert r.content == "Hello, world"
    assert r.finish_reason == "stop"
    assert r.model == "claude-3-5-sonnet-20241022" and r.provider_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.cached_prompt_tokens,
    ) == (312, 6, 200)


def test_anthropic_parse_usage_without_cache(an: AnthropicAdapter) -> None:
    body = dict(ANTHROPIC_OK, usage={"input_tokens": 5, "output_tokens": 7})
    r = an.parse_response(body)
    assert (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.cached_prompt_tokens,
    ) == (5, 7, 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_stop_reasons(an: AnthropicAdapter, raw: str, expected: str) -> None:
    assert an.parse_response(dict(ANTHROPIC_OK, stop_reason=raw)).finish_reason == expected


def test_anthropic_empty_content_list_is_fine(an: AnthropicAdapter) -> None:
    r = an.parse_response(dict(ANTHROPIC_OK, content=[], stop_reason="max_tokens"))
    assert r.content == "" and r.finish_reason == "length"


@pytest.mark.parametrize("body", [{"id": "msg", "model": "claude"}, {"content": "text"}, None])
def test_anthropic_malformed(an: AnthropicAdapter, body: Any) -> None:
    with pytest.raises(GatewayError) as ei:
        an.parse_response(body)
    assert ei.value.type is ErrorType.INTERNAL and ei.value.retryable is True
    assert ei.value.provider == "anthropic"


# ------------------------------------------------------------------------------ Anthropic errors


@pytest.mark.parametrize(
    ("status", "body", "etype", "retryable"),
    [
        (
            401,
            anthropic_error("authentication_error", "invalid x-api-key"),
            ErrorType.AUTHENTICATION,
            False,
        ),
        (
            403,
            anthropic_error(
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
            ErrorType.PERMISSION,
            False,
        ),
        (
            404,
            anthropic_error("not_found_error", "model: claude-9"),
            ErrorType.INVALID_REQUEST,
            False,
        ),
        (
            413,
            anthropic_error(
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            ),
            ErrorType.INVALID_REQUEST,
            False,
        ),
        (413, None, ErrorType.INVALID_REQUEST, False),
        (
            400,
            anthropic_error(
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
            ),
            ErrorType.CONTEXT_LENGTH,
            False,
        ),
        (
            400,
            anthropic_error(
                "invalid_request_error",
                "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000, "
                "decrease input length or `max_tokens` and try again",
            ),
            ErrorType.CONTEXT_LENGTH,
            False,
        ),
        (
            400,
            anthropic_error(
                "invalid_request_error",
                'messages: roles must alternate between "user" and "assistant"',
            ),
            ErrorType.INVALID_REQUEST,
            False,
        ),
        (
            400,
            anthropic_error(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API.",
            ),
            ErrorType.RATE_LIMIT,
            False,
        ),
        (
            402,
            anthropic_error("billing_error", "Billing issue"),
            ErrorType.RATE_LIMIT,
            False,
        ),
        (
            429,
            anthropic_error(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
            ErrorType.RATE_LIMIT,
            True,
        ),
        (
            500,
            anthropic_error("api_error", "Internal server error"),
            ErrorType.SERVICE_UNAVAILABLE,
            True,
        ),
        (
            529,
            anthropic_error("overloaded_error", "Overloaded"),
            ErrorType.SERVICE_UNAVAILABLE,
            True,
        ),
        (502, None, ErrorType.SERVICE_UNAVAILABLE, True),
        (503, "<html>Service Unavailable</html>", ErrorType.SERVICE_UNAVAILABLE, True),
        (
            504,
            anthropic_error("timeout_error", "Request timed out"),
            ErrorType.SERVICE_UNAVAILABLE,
            True,
        ),
        (408, None, ErrorType.TIMEOUT, True),
    ],
)
def test_anthropic_errors(an: AnthropicAdapter, status: int, body: Any, etype: ErrorType, retryable: bool) -> None:
    e = an.map_error(status, body, {})
    assert e.type is etype and e.retryable is retryable and e.provider == "anthropic"
    if isinstance(body, dict):
        assert e.message == body["error"]["message"]
    else:
        assert e.message == f"Anthropic returned HTTP {status}"


def test_anthropic_429_retry_after(an: AnthropicAdapter) -> None:
    e = an.map_error(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "7"})
    assert e.retry_after == 7.0
    e = an.map_error(529, anthropic_error("overloaded_error", "Overloaded"), {"Retry-After": "2"})
    assert e.retry_after == 2.0


def test_anthropic_key_scrubbed(an: AnthropicAdapter) -> None:
    e = an.map_error(
        401,
        anthropic_error("authentication_error", "invalid x-api-key sk-ant-api03-AbCdEf123456_-xyz"),
        {},
    )
    assert "AbCdEf" not in e.message and e.message == "invalid x-api-key sk-***"


# ------------------------------------------------------------------------------------- helpers


def test_scrub() -> None:
    assert scrub("key sk-proj-abc123DEF456 and sk-ant-api03-zz_-99aa.") == "key sk-*** and sk-***."
    assert scrub("masked sk-proj-********************************abcd here") == "masked sk-*** here"
    assert scrub("a task-list with no keys") == "a task-list with no keys"
    assert scrub(scrub("sk-abcdefghij")) == "sk-***"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("soon", None),
        ("", None),
    ],
)
def test_parse_duration(raw: str, seconds: float | None) -> None:
    got = parse_duration(raw)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.75") == 0.75
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_error_roundtrip_through_queue(oa: OpenAIAdapter) -> None:
    e = oa.map_error(
        429,
        openai_error("slow", "requests", "rate_limit_exceeded"),
        {"retry-after": "2"},
    )
    back = GatewayError.from_dict(e.to_dict())
    assert (back.type, back.retryable, back.provider, back.retry_after) == (
        ErrorType.RATE_LIMIT,
        True,
        "openai",
        2.0,
    )


# ----------------------------------------------------------------------------- transport errors

_REQ = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out", request=_REQ),
        httpx.ConnectTimeout("connect timed out", request=_REQ),
        httpx.PoolTimeout("pool timed out", request=_REQ),
        httpx.WriteTimeout("write timed out", request=_REQ),
        TimeoutError(),
    ],
)
def test_transport_timeouts(exc: Exception) -> None:
    e = map_transport_error(exc, "openai")
    assert e.type is ErrorType.TIMEOUT and e.retryable is True and e.provider == "openai"
    assert "openai" in e.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused", request=_REQ),
        httpx.RemoteProtocolError("Server disconnected without sending a response.", request=_REQ),
        httpx.ReadError("connection reset", request=_REQ),
    ],
)
def test_transport_errors(exc: Exception) -> None:
    e = map_transport_error(exc, "anthropic")
    assert e.type is ErrorType.SERVICE_UNAVAILABLE and e.retryable is True and e.provider == "anthropic"
    assert "anthropic" in e.message


def test_transport_other_errors(oa: OpenAIAdapter, an: AnthropicAdapter) -> None:
    assert oa.map_transport_error(httpx.ConnectError("x")).provider == "openai"
    assert an.map_transport_error(httpx.ReadTimeout("x")).type is ErrorType.TIMEOUT
    bad_json = json.JSONDecodeError("Expecting value", "<html>", 0)
    e = map_transport_error(bad_json, "openai")
    assert e.type is ErrorType.INTERNAL and e.retryable is True
    e = map_transport_error(RuntimeError("boom sk-secret12345678"), "openai")
    assert e.type is ErrorType.INTERNAL and e.retryable is False and "secret" not in e.message
