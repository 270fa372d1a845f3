"""OpenAI's own wire shapes: its chat request body, its chat.completion answer, its error body.

Used by the OpenAI-compatible routes (`/v1/...`) and by batch uploads in OpenAI's Batch format.
Requests are translated into the gateway's `ChatRequest`, so both ways in share one pipeline.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from api.errors import field_path
from shared.errors import HTTP_STATUS, ErrorType, GatewayError
from shared.schemas import OPENAI_OPTIONS, ChatRequest, EmbeddingsRequest, integral

# OpenAI's error `type` for each gateway error type, and the `code` it sends with it.
_OPENAI_ERROR: dict[str, tuple[str, str | None]] = {
    ErrorType.RATE_LIMIT: ("requests", "rate_limit_exceeded"),
    ErrorType.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorType.PERMISSION: ("invalid_request_error", "permission_denied"),
    ErrorType.SERVICE_UNAVAILABLE: ("server_error", "service_unavailable"),
    ErrorType.TIMEOUT: ("server_error", "timeout"),
    ErrorType.CONTEXT_LENGTH: ("invalid_request_error", "context_length_exceeded"),
    ErrorType.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorType.NOT_FOUND: ("invalid_request_error", "not_found"),
    ErrorType.CANCELLED: ("invalid_request_error", "cancelled"),
    ErrorType.INTERNAL: ("server_error", None),
}


# What a message may carry, as OpenAI takes it; anything else in it (`refusal: null`, `annotations`,
# `audio` of an answer a client sends back as it got it) is left out, as OpenAI ignores it.
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
_LEGACY_CALL_ID = "call_function_{}"  # the id a legacy `function_call` gets as a tool call


class OpenAIChatBody(BaseModel):
    """OpenAI's chat completion request: passed on as sent, by way of the gateway's `ChatRequest`
    (legacy `functions` become the tools they stand for)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # like OpenAI: "temperature": "0.7" is refused

    model: str = Field(min_length=1, max_length=128)
    messages: list[Any] = Field(min_length=1, max_length=2048)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: list[StrictStr] | StrictStr | None = None
    user: str | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    parallel_tool_calls: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    provider: Literal["openai", "anthropic"] | None = None  # the gateway's own routing hint

    _integers = field_validator("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs", mode="before")(
        integral
    )

    @property
    def legacy_functions(self) -> bool:
        """Whether the caller uses the legacy `functions` (its answer then carries `function_call`)."""
        return self.functions is not None

    @property
    def include_usage(self) -> bool:
        """A stream's usage chunk was asked for (`stream_options.include_usage`)."""
        return bool((self.stream_options or {}).get("include_usage"))

    def to_chat_request(self) -> ChatRequest:
        """The gateway request; GatewayError (400, naming the parameter) for what it cannot do."""
        if self.stream_options is not None and not self.stream:
            raise _unsupported("stream_options", "stream_options is only allowed when stream is true")
        if self.stream_options is not None and not isinstance(self.stream_options.get("include_usage", False), bool):
            raise _unsupported("stream_options.include_usage", "include_usage must be a boolean")
        data: dict[str, Any] = {
            "messages": _messages(self.messages),
            "model": self.model,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "provider": self.provider,
            "user": self.user,
            "metadata": self.metadata,
            "stream": self.stream,
        }
        for name in OPENAI_OPTIONS:
            data[name] = getattr(self, name)
        if self.functions is not None:
            if self.tools is not None:
                raise _unsupported("functions", "send either `tools` or the legacy `functions`, not both")
            data["tools"] = [{"type": "function", "function": f} for f in self.functions]
            call = self.function_call
            data["tool_choice"] = {"type": "function", "function": call} if isinstance(call, dict) else call
        try:
            return ChatRequest.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            raise validation_error(exc) from None


def _messages(raw: list[Any]) -> list[Any]:
    """OpenAI's messages as the gateway's: only the keys a message may carry (nulls left out), legacy
    `function_call`s and `function` messages as the tool calls and `tool` messages they stand for."""
    out: list[Any] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            out.append(m)  # refused by validation, by its position
            continue
        message = {k: m[k] for k in _MESSAGE_KEYS if m.get(k) is not None}
        if m.get("content") is None and m.get("role") in ("system", "developer", "user"):
            message["content"] = ""  # as OpenAI takes a null content: empty
        if m.get("role") == "assistant" and not m.get("tool_calls") and isinstance(m.get("function_call"), dict):
            message["tool_calls"] = [
                {"id": _LEGACY_CALL_ID.format(i), "type": "function", "function": m["function_call"]}
            ]
        elif m.get("role") == "function":
            message = {"role": "tool", "content": m.get("content"), "tool_call_id": _LEGACY_CALL_ID.format(i - 1)}
        out.append(message)
    return out


def _unsupported(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def validation_error(exc: ValidationError) -> GatewayError:
    """A pydantic error as a 400 naming the first offending parameter (OpenAI's style)."""
    first = exc.errors()[0]
    param = ".".join(field_path(first.get("loc", ()))) or None
    message = "; ".join(f"{'.'.join(field_path(e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in exc.errors()[:5])
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def parse_chat_body(data: Any) -> OpenAIChatBody:
    """The body as OpenAI's request (its `to_chat_request` gives the gateway's)."""
    if not isinstance(data, dict):
        raise GatewayError(ErrorType.INVALID_REQUEST, "the request body must be a JSON object")
    try:
        return OpenAIChatBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def chat_completion(data: dict[str, Any], legacy_functions: bool = False) -> dict[str, Any]:
    """The gateway's answer (camelCase data of a succeeded request) as OpenAI's chat.completion: every
    choice, its tool calls (as a legacy `function_call` for a caller using `functions`), refusal and
    logprobs, and the usage with its details."""
    first = {
        "content": data.get("content"),
        "finishReason": data.get("finishReason"),
        "toolCalls": data.get("toolCalls"),
        "refusal": data.get("refusal"),
        "logprobs": data.get("logprobs"),
    }
    choices = [_choice(0, first, legacy_functions)]
    choices += [_choice(c["index"], c, legacy_functions) for c in data.get("choices") or ()]
    usage = data.get("usage") or {}
    out_usage: dict[str, Any] = {
        "prompt_tokens": usage.get("promptTokens", 0),
        "completion_tokens": usage.get("completionTokens", 0),
        "total_tokens": usage.get("totalTokens", 0),
    }
    if "cachedTokens" in usage:
        out_usage["prompt_tokens_details"] = {"cached_tokens": usage["cachedTokens"]}
    if "reasoningTokens" in usage:
        out_usage["completion_tokens_details"] = {"reasoning_tokens": usage["reasoningTokens"]}
    return {
        "id": f"chatcmpl-{data.get('id')}",
        "object": "chat.completion",
        "created": data.get("created"),
        "model": data.get("model"),
        "choices": choices,
        "usage": out_usage,
        "system_fingerprint": None,
    }


def _choice(index: int, choice: dict[str, Any], legacy_functions: bool) -> dict[str, Any]:
    calls = choice.get("toolCalls")
    finish = _finish_reason(choice.get("finishReason"))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not choice.get("content") else choice.get("content"),
        "refusal": choice.get("refusal"),
    }
    if calls and legacy_functions:
        message["function_call"] = calls[0]["function"]
        finish = "function_call"
    elif calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "logprobs": choice.get("logprobs"), "finish_reason": finish}


def parse_embeddings_body(data: Any) -> EmbeddingsRequest:
    if not isinstance(data, dict):
        raise GatewayError(ErrorType.INVALID_REQUEST, "the request body must be a JSON object")
    if isinstance(data.get("input"), list) and data["input"] and not isinstance(data["input"][0], str):
        raise _unsupported("input", "input as token arrays is not supported; send the text")
    try:
        return EmbeddingsRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def embeddings_list(data: dict[str, Any]) -> dict[str, Any]:
    """The gateway's answer (camelCase data of a succeeded embeddings request) as OpenAI's list."""
    prompt = (data.get("usage") or {}).get("promptTokens", 0)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data.get("embeddings") or ())
        ],
        "model": data.get("model"),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def _finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "content_filter", "tool_calls") else "stop"


def error_body(error: dict[str, Any]) -> dict[str, Any]:
    """A gateway error dict (`type`, `message`, `param`, ...) as OpenAI's `{"error": {...}}`."""
    etype = str(error.get("type"))
    openai_type, code = _OPENAI_ERROR.get(etype, ("server_error", None))
    return {
        "error": {
            "message": error.get("message") or etype,
            "type": openai_type,
            "param": error.get("param"),
            "code": code,
        }
    }


def error_status(error: dict[str, Any]) -> int:
    try:
        return HTTP_STATUS[ErrorType(str(error.get("type")))]
    except ValueError:
        return 500
