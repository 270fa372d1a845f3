"""OpenAI's own wire shapes: its chat request body, its chat.completion answer, its error body.

Used by the OpenAI-compatible routes (`/v1/...`) and by batch uploads in OpenAI's Batch format.
Requests are translated into the gateway's `ChatRequest`, so both ways in share one pipeline.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from shared.errors import HTTP_STATUS, ErrorType, GatewayError
from shared.schemas import ChatRequest, integral

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


OPENAI_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: StrictStr | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                # name the type only if it is one of OpenAI's: an error never echoes what the caller sent
                kind = repr(part.type) if part.type in OPENAI_PART_TYPES else "other than text"
                raise ValueError(f"content parts of type {kind} are not supported, only text")
            texts.append(part.text)
        return "".join(texts)


class OpenAIChatBody(BaseModel):
    """OpenAI's chat completion request. Parameters the gateway cannot honour are refused by name;
    sampling knobs that only shade the answer (penalties, seed, logit bias) are accepted and ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)  # like OpenAI: "temperature": "0.7" is refused

    model: str = Field(min_length=1, max_length=128)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=2048)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: list[StrictStr] | StrictStr | None = None
    user: str | None = None
    n: int | None = Field(None, ge=1)
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

    @field_validator("messages")
    @classmethod
    def _text_only(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        for m in messages:
            m.text()
        return messages

    def to_chat_request(self) -> ChatRequest:
        """The gateway request; GatewayError (400, naming the parameter) for what it cannot do."""
        if self.stream_options is not None and not self.stream:
            raise _unsupported("stream_options", "stream_options is only allowed when stream is true")
        if self.stream_options is not None and not isinstance(self.stream_options.get("include_usage", False), bool):
            raise _unsupported("stream_options.include_usage", "include_usage must be a boolean")
        if self.n not in (None, 1):
            raise _unsupported("n", "only n=1 is supported")
        if self.tools or self.functions:
            raise _unsupported("tools" if self.tools else "functions", "tool and function calling are not supported")
        if self.logprobs:
            raise _unsupported("logprobs", "logprobs are not supported")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise _unsupported("response_format", "only the text response format is supported")
        data: dict[str, Any] = {
            "messages": [{"role": _role(m.role), "content": m.text()} for m in self.messages],
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
        try:
            return ChatRequest.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            raise validation_error(exc) from None


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def _unsupported(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def validation_error(exc: ValidationError) -> GatewayError:
    """A pydantic error as a 400 naming the first offending parameter (OpenAI's style)."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in exc.errors()[:5]
    )
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def parse_chat_body(data: Any) -> tuple[ChatRequest, bool]:
    """The gateway request, and whether a stream's usage chunk was asked for (`include_usage`)."""
    if not isinstance(data, dict):
        raise GatewayError(ErrorType.INVALID_REQUEST, "the request body must be a JSON object")
    try:
        body = OpenAIChatBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return body.to_chat_request(), bool((body.stream_options or {}).get("include_usage"))


def chat_completion(data: dict[str, Any]) -> dict[str, Any]:
    """The gateway's answer (camelCase data of a succeeded request) as OpenAI's chat.completion."""
    usage = data.get("usage") or {}
    return {
        "id": f"chatcmpl-{data.get('id')}",
        "object": "chat.completion",
        "created": data.get("created"),
        "model": data.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": data.get("content"), "refusal": None},
                "logprobs": None,
                "finish_reason": _finish_reason(data.get("finishReason")),
            }
        ],
        "usage": {
            "prompt_tokens": usage.get("promptTokens", 0),
            "completion_tokens": usage.get("completionTokens", 0),
            "total_tokens": usage.get("totalTokens", 0),
        },
        "system_fingerprint": None,
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
