"""Anthropic's own wire shapes: its Messages request, its message answer, its error body.

Used by `POST /v1/messages`. A request is read into the gateway's `ChatRequest` (OpenAI's terms,
the provider-neutral form): `system` becomes a system message, text and image blocks content parts
(an image's base64 source a data URL), `tool_use` blocks an assistant's tool calls and `tool_result`
blocks `tool` messages, tools and tool choice OpenAI's, the 0..1 temperature the gateway's 0..2;
`cache_control` marks ride on the parts and tools they were set on and reach Anthropic untouched.
The answer (whichever provider served it) is written back as Anthropic's message.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from api.openai_shapes import validation_error
from shared.errors import ErrorType, GatewayError
from shared.schemas import ChatRequest

# the versions of the Messages API this shape speaks (Anthropic refuses any other): the two Anthropic
# documents, and the one the `anthropic` package 2.17 sends (its ANTHROPIC_API_VERSION)
ANTHROPIC_VERSIONS = frozenset({"2023-01-01", "2023-06-01", "2026-10-21"})
_ERROR_TYPES: dict[str, str] = {
    ErrorType.RATE_LIMIT: "rate_limit_error",
    ErrorType.AUTHENTICATION: "authentication_error",
    ErrorType.PERMISSION: "permission_error",
    ErrorType.SERVICE_UNAVAILABLE: "overloaded_error",
    ErrorType.TIMEOUT: "api_error",
    ErrorType.NOT_FOUND: "not_found_error",
    ErrorType.INTERNAL: "api_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class AnthropicMessagesBody(BaseModel):
    """Anthropic's Messages request (`POST /v1/messages`); blocks are checked when read."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=128)
    max_tokens: int = Field(gt=0)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=2048)
    system: StrictStr | list[dict[str, Any]] | None = None
    stop_sequences: list[StrictStr] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    stream: bool | None = None
    provider: Literal["openai", "anthropic"] | None = None  # the gateway's own routing hint

    def to_chat_request(self, beta: str | None) -> ChatRequest:
        """The gateway request; GatewayError (400, naming the parameter) for what it cannot do."""
        messages: list[dict[str, Any]] = []
        if self.system is not None:
            messages.append(
                {
                    "role": "system",
                    "content": self.system if isinstance(self.system, str) else _parts(self.system, "system"),
                }
            )
        for i, m in enumerate(self.messages):
            messages.extend(_messages(m, i))
        user = (self.metadata or {}).get("user_id")
        data: dict[str, Any] = {
            "messages": messages,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": None if self.temperature is None else self.temperature * 2,  # the gateway's 0..2
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": self.stop_sequences,
            "user": user if isinstance(user, str) else None,
            "thinking": self.thinking,
            "anthropic_beta": beta,
            "provider": self.provider,
            "stream": self.stream,
        }
        if self.tools is not None:
            data["tools"] = [_tool(t, k) for k, t in enumerate(self.tools)]
        if self.tool_choice is not None:
            data.update(_tool_choice(self.tool_choice))
        try:
            return ChatRequest.model_validate({k: v for k, v in data.items() if v is not None})
        except ValidationError as exc:
            raise validation_error(exc) from None


def bad(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorType.INVALID_REQUEST, message, param=param, retryable=False)


def _cache_mark(block: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" in block:
        out["cache_control"] = block["cache_control"]
    return out


def _part(block: Any, where: str) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text" and isinstance(block.get("text"), str):
        return _cache_mark(block, {"type": "text", "text": block["text"]})
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = str(source.get("url"))
        else:
            raise bad(f"{where}.source", "an image source must be of type base64 or url")
        return _cache_mark(block, {"type": "image_url", "image_url": {"url": url}})
    if kind in ("document", "thinking", "redacted_thinking", "search_result", "server_tool_use"):
        raise bad(where, f"content blocks of type {kind!r} are not supported here")
    # the type sent is not echoed: it could be anything
    raise bad(where, "a content block's type must be text, image, tool_use or tool_result")


def _parts(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    return [_part(b, f"{where}.{j}") for j, b in enumerate(blocks)]


def _messages(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    """One Anthropic message as the gateway's messages: a user turn's tool results become `tool`
    messages (first, as they answer the calls just before), an assistant's tool uses its tool calls."""
    role, content, where = message.get("role"), message.get("content"), f"messages.{i}.content"
    if role not in ("user", "assistant"):
        raise bad(f"messages.{i}.role", "a message's role must be user or assistant")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad(where, "content must be a string or a list of content blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result" and role == "user":
            result = block.get("content", "")
            text = result if isinstance(result, str) else _parts(result, f"{where}.{j}.content")
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        else:
            parts.append(_part(block, f"{where}.{j}"))
    if role == "assistant":
        text = "".join(p.get("text", "") for p in parts)
        turn: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            turn["tool_calls"] = calls
        return [turn]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _tool(tool: dict[str, Any], k: int) -> dict[str, Any]:
    if "input_schema" not in tool:
        raise bad(f"tools.{k}.input_schema", "only custom tools (with an input_schema) are supported")
    function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    return _cache_mark(tool, {"type": "function", "function": function})


def _tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    kind = choice.get("type")
    mapped: Any = {"auto": "auto", "none": "none", "any": "required"}.get(str(kind))
    if kind == "tool":
        mapped = {"type": "function", "function": {"name": choice.get("name")}}
    if mapped is None:
        raise bad("tool_choice.type", "tool_choice.type must be auto, any, tool or none")
    out: dict[str, Any] = {"tool_choice": mapped}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def parse_messages_body(data: Any, beta: str | None) -> ChatRequest:
    if not isinstance(data, dict):
        raise GatewayError(ErrorType.INVALID_REQUEST, "the request body must be a JSON object")
    try:
        body = AnthropicMessagesBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return body.to_chat_request(beta)


def message(data: dict[str, Any]) -> dict[str, Any]:
    """The gateway's answer (camelCase data of a succeeded request) as Anthropic's message."""
    blocks: list[dict[str, Any]] = []
    if data.get("content"):
        blocks.append({"type": "text", "text": data["content"]})
    for call in data.get("toolCalls") or ():
        function = call["function"]
        try:
            arguments = orjson.loads(function["arguments"] or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments})
    usage = data.get("usage") or {}
    read, written = usage.get("cachedTokens", 0), usage.get("cacheWriteTokens", 0)
    return {
        "id": f"msg_{data.get('id')}",
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": blocks,
        "stop_reason": _STOP_REASONS.get(str(data.get("finishReason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(usage.get("promptTokens", 0) - read - written, 0),
            "output_tokens": usage.get("completionTokens", 0),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        },
    }


def error_body(error: dict[str, Any]) -> dict[str, Any]:
    """A gateway error dict as Anthropic's `{"type": "error", "error": {type, message}}`."""
    etype = _ERROR_TYPES.get(str(error.get("type")), "invalid_request_error")
    message = str(error.get("message") or etype)
    if error.get("param"):
        message = f"{error['param']}: {message}"  # Anthropic names the location first
    return {"type": "error", "error": {"type": etype, "message": message}}
