"""OpenAI Chat Completions adapter: pure data in, data out (the worker does the HTTP)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import ErrorType, GatewayError
from shared.schemas import CalledTool, Choice, FinishReason, ProviderCall, ProviderResult, Usage
from shared.settings import Settings
from workers.providers.base import HttpRequest
from workers.providers.translate import (
    as_int,
    clean_message,
    error_fields,
    header,
    malformed,
    map_transport_error,
    parse_duration,
    retry_after_from,
    safe_header_value,
)

if TYPE_CHECKING:
    from workers.providers.openai_stream import OpenAIStreamParser

PROVIDER = "openai"

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
# Reasoning models (o1, o3, o4-mini, gpt-5...) reject `max_tokens` and want `max_completion_tokens`.
_REASONING_MODEL = re.compile(r"^(?:ft:)?(?:o\d|gpt-5)")
_CONTEXT_WORDING = re.compile(r"maximum context length|context window|context_length_exceeded", re.IGNORECASE)


def _uses_max_completion_tokens(model: str) -> bool:
    return bool(_REASONING_MODEL.match(model.lower()))


class OpenAIAdapter:
    name = PROVIDER

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- requests ---------------------------------------------------------------------------------

    def _headers(self, api_key: str | None, request_id: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        org = safe_header_value(self.settings.openai_organization)
        if org:
            headers["OpenAI-Organization"] = org
        rid = safe_header_value(request_id)
        if rid:
            headers["X-Request-ID"] = rid
        return headers

    def build_request(self, call: ProviderCall, api_key: str | None) -> HttpRequest:
        if call.endpoint == "embeddings":
            return self._embeddings_request(call, api_key)
        body: dict[str, Any] = {"model": call.model, "messages": [_openai_message(m) for m in call.messages]}
        if call.max_tokens is not None:
            key = "max_completion_tokens" if _uses_max_completion_tokens(call.model) else "max_tokens"
            body[key] = call.max_tokens
        if call.temperature is not None:
            body["temperature"] = call.temperature
        if call.top_p is not None:
            body["top_p"] = call.top_p
        if call.stop:
            body["stop"] = list(call.stop)
        if call.user:
            body["user"] = call.user
        headers = self._headers(api_key, call.request_id)
        if call.options:
            body.update(call.options)
            if "tools" in call.options:
                body["tools"] = [_without_cache_control(t) for t in call.options["tools"]]
        if call.stream:  # the last chunk then carries the usage, as a whole answer does
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            headers["Accept"] = "text/event-stream"
        return HttpRequest("POST", "/chat/completions", headers, body)

    def stream_parser(self) -> OpenAIStreamParser:
        from workers.providers.openai_stream import OpenAIStreamParser  # here: that module reads this one

        return OpenAIStreamParser(self)

    def _embeddings_request(self, call: ProviderCall, api_key: str | None) -> HttpRequest:
        body: dict[str, Any] = {"model": call.model, "input": [m["content"] for m in call.messages]}
        if call.options:
            body.update(call.options)
        if call.user:
            body["user"] = call.user
        return HttpRequest("POST", "/embeddings", self._headers(api_key, call.request_id), body)

    def probe_request(self, api_key: str | None) -> HttpRequest:
        headers = self._headers(api_key)
        headers.pop("Content-Type")
        return HttpRequest("GET", "/models", headers)

    # -- responses --------------------------------------------------------------------------------

    def parse_response(self, body: dict[str, Any]) -> ProviderResult:
        if not isinstance(body, dict):
            raise malformed(PROVIDER, "body is not a JSON object")
        if body.get("object") == "list":
            return _embeddings(body)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(PROVIDER, "no choices")
        first = _choice(choices[0], 0)
        provider_id = body.get("id")
        more = [_choice(c, i) for i, c in enumerate(choices[1:], start=1) if isinstance(c, dict)]
        return ProviderResult(
            content=first.content or "",
            finish_reason=first.finish_reason,
            usage=usage_of(body.get("usage")),
            model=str(body.get("model") or ""),
            provider_id=str(provider_id) if provider_id is not None else None,
            tool_calls=first.tool_calls,
            refusal=first.refusal,
            logprobs=first.logprobs,
            choices=more or None,
        )

    # -- errors -----------------------------------------------------------------------------------

    def map_error(self, status: int, body: dict[str, Any] | None, headers: Mapping[str, str]) -> GatewayError:
        f = error_fields(body)
        message = clean_message(f["message"], f"OpenAI returned HTTP {status}")
        code, etype = (f["code"] or "").lower(), (f["type"] or "").lower()

        def err(
            t: ErrorType,
            retryable: bool | None = None,
            retry_after: float | None = None,
        ) -> GatewayError:
            return GatewayError(
                t,
                message,
                retryable=retryable,
                param=f["param"],
                provider=PROVIDER,
                retry_after=retry_after,
            )

        if status == 401:
            return err(ErrorType.AUTHENTICATION, False)
        if status == 403:
            return err(ErrorType.PERMISSION, False)
        if status == 429:
            if "insufficient_quota" in (code, etype):
                return err(ErrorType.RATE_LIMIT, False)
            return err(ErrorType.RATE_LIMIT, True, _openai_retry_after(headers))
        if status == 408:
            return err(ErrorType.TIMEOUT, True, retry_after_from(headers))
        if status >= 500:
            return err(ErrorType.SERVICE_UNAVAILABLE, True, retry_after_from(headers))
        if status == 400 and (code == "context_length_exceeded" or _CONTEXT_WORDING.search(message)):
            return err(ErrorType.CONTEXT_LENGTH, False)
        return err(ErrorType.INVALID_REQUEST, False)

    def map_transport_error(self, exc: BaseException) -> GatewayError:
        return map_transport_error(exc, PROVIDER)


def usage_of(raw: Any) -> Usage:
    """An answer's `usage` object (the whole answer's, or a stream's last chunk's) as the gateway counts it."""
    if not isinstance(raw, dict):
        return Usage()
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    return Usage(
        prompt_tokens=as_int(raw.get("prompt_tokens")),
        completion_tokens=as_int(raw.get("completion_tokens")),
        cached_prompt_tokens=as_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning_tokens=(
            as_int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        ),
    )


def _embeddings(body: dict[str, Any]) -> ProviderResult:
    """An embeddings answer: its vectors in input order (floats, or base64 as asked) and its usage."""
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(d, dict) and "embedding" in d for d in data):
        raise malformed(PROVIDER, "an embeddings answer without its data")
    ordered = sorted(data, key=lambda d: as_int(d.get("index")))
    usage_obj = body.get("usage")
    usage = Usage(prompt_tokens=as_int(usage_obj.get("prompt_tokens")) if isinstance(usage_obj, dict) else 0)
    return ProviderResult(
        content="",
        finish_reason="stop",
        usage=usage,
        model=str(body.get("model") or ""),
        embeddings=[d["embedding"] for d in ordered],
    )


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """A neutral message as OpenAI takes it: as it is, less Anthropic's cache marks on its parts."""
    content = message.get("content")
    if content.__class__ is list:
        return {**message, "content": [_without_cache_control(p) for p in content]}
    if "tool_calls" in message or "tool_call_id" in message:
        return message
    return {"role": message["role"], "content": content}


def _without_cache_control(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "cache_control"} if "cache_control" in item else item


def _choice(choice: dict[str, Any], index: int) -> Choice:
    """One choice of an answer: its text (a refusal's text when it refused), tool calls and logprobs."""
    message = choice.get("message")
    if not isinstance(message, dict):
        raise malformed(PROVIDER, f"choices[{index}] has no message")
    finish: FinishReason = FINISH.get(str(choice.get("finish_reason") or "stop"), "stop")
    content = message.get("content")
    refusal = message.get("refusal")
    if isinstance(content, list):  # content parts (some compatible servers)
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    tool_calls = _tool_calls(message, index)
    if content is None:
        if isinstance(refusal, str) and refusal:
            content, finish = refusal, "content_filter"
        elif "content" not in message and not tool_calls:
            raise malformed(PROVIDER, f"choices[{index}].message has no content")
    elif not isinstance(content, str):
        raise malformed(PROVIDER, f"choices[{index}].message.content is not a string")
    logprobs = choice.get("logprobs")
    return Choice(
        content=content,
        finish_reason=finish,
        tool_calls=tool_calls,
        refusal=refusal if isinstance(refusal, str) else None,
        logprobs=logprobs if isinstance(logprobs, dict) else None,
    )


def _tool_calls(message: dict[str, Any], index: int) -> list[CalledTool] | None:
    raw = message.get("tool_calls")
    legacy = message.get("function_call")
    if not raw and isinstance(legacy, dict):  # the legacy `functions` answer: one call, no id
        raw = [{"id": "", "function": legacy}]
    if not raw:
        return None
    if not isinstance(raw, list):
        raise malformed(PROVIDER, f"choices[{index}].message.tool_calls is not a list")
    out: list[CalledTool] = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise malformed(PROVIDER, f"choices[{index}].message.tool_calls has a call without a function name")
        arguments = function.get("arguments")
        out.append(
            CalledTool(str(call.get("id") or ""), function["name"], arguments if isinstance(arguments, str) else "{}")
        )
    return out


def _openai_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """retry-after(-ms) first; else the reset of whichever limit is exhausted (x-ratelimit-reset-*)."""
    explicit = retry_after_from(headers)
    if explicit is not None:
        return explicit
    resets: list[float] = []
    fallback: list[float] = []
    for kind in ("requests", "tokens"):
        reset = parse_duration(header(headers, f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        fallback.append(reset)
        if (header(headers, f"x-ratelimit-remaining-{kind}") or "").strip() == "0":
            resets.append(reset)
    if resets:
        return max(resets)
    return min(fallback) if fallback else None
