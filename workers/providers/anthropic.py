"""Anthropic Messages adapter: translates the OpenAI-shaped call (system in-line, 0..2 temperature)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import ErrorType, GatewayError
from shared.schemas import FinishReason, ProviderCall, ProviderResult, Usage
from shared.settings import Settings
from workers.providers.anthropic_translate import CONTINUE_PLACEHOLDER, parse_blocks, tool_fields, translate_messages
from workers.providers.base import HttpRequest
from workers.providers.translate import (
    as_int,
    clean_message,
    error_fields,
    malformed,
    map_transport_error,
    retry_after_from,
    safe_header_value,
)

if TYPE_CHECKING:
    from workers.providers.anthropic_stream import AnthropicStreamParser

PROVIDER = "anthropic"
ANTHROPIC_OWN = ("top_k", "thinking")  # options of Anthropic's own, sent as they came
__all__ = ["CONTINUE_PLACEHOLDER", "AnthropicAdapter", "map_temperature", "translate_messages"]

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_CONTEXT_WORDING = re.compile(
    r"prompt is too long|context (?:limit|window|length)|maximum context|exceeds? (?:the )?context",
    re.IGNORECASE,
)
_BILLING_WORDING = re.compile(r"credit balance is too low", re.IGNORECASE)


def map_temperature(temperature: float) -> float:
    """Gateway/OpenAI scale 0..2 → Anthropic 0..1."""
    return min(1.0, max(0.0, temperature / 2.0))


class AnthropicAdapter:
    name = PROVIDER

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- requests ---------------------------------------------------------------------------------

    def _headers(self, api_key: str | None, request_id: str | None = None) -> dict[str, str]:
        headers = {
            "anthropic-version": self.settings.anthropic_version,
            "content-type": "application/json",
            "accept": "application/json",
        }
        if api_key:
            headers["x-api-key"] = api_key
        rid = safe_header_value(request_id)
        if rid:
            headers["X-Request-ID"] = rid
        return headers

    def build_request(self, call: ProviderCall, api_key: str | None) -> HttpRequest:
        system, messages = translate_messages(call.messages)
        body: dict[str, Any] = {
            "model": call.model,
            "max_tokens": call.max_tokens or self.settings.anthropic_default_max_tokens,
            "messages": messages,
        }
        if system is not None:
            body["system"] = system
        if call.temperature is not None:
            body["temperature"] = map_temperature(call.temperature)
        # Recent models refuse temperature and top_p together; temperature wins.
        if call.top_p is not None and call.temperature is None:
            body["top_p"] = call.top_p
        if call.stop:
            # Anthropic rejects empty or whitespace-only stop sequences.
            stops = [s for s in call.stop if s.strip()]
            if stops:
                body["stop_sequences"] = stops
        if call.user:
            body["metadata"] = {"user_id": call.user}
        headers = self._headers(api_key, call.request_id)
        if call.options:
            body.update(tool_fields(call.options))
            body.update((k, call.options[k]) for k in ANTHROPIC_OWN if k in call.options)
            beta = safe_header_value(call.options.get("anthropic_beta"), limit=512)
            if beta:
                headers["anthropic-beta"] = beta
        if call.stream:
            body["stream"] = True
        return HttpRequest("POST", "/v1/messages", headers, body)

    def stream_parser(self) -> AnthropicStreamParser:
        from workers.providers.anthropic_stream import AnthropicStreamParser  # here: that module reads this one

        return AnthropicStreamParser(self)

    def probe_request(self, api_key: str | None) -> HttpRequest:
        headers = self._headers(api_key)
        headers.pop("content-type")
        return HttpRequest("GET", "/v1/models", headers)

    # -- responses --------------------------------------------------------------------------------

    def parse_response(self, body: dict[str, Any]) -> ProviderResult:
        if not isinstance(body, dict):
            raise malformed(PROVIDER, "body is not a JSON object")
        blocks = body.get("content")
        if not isinstance(blocks, list):
            raise malformed(PROVIDER, "no content blocks")
        text, calls, json_answer = parse_blocks(blocks)
        finish: FinishReason = FINISH.get(str(body.get("stop_reason") or "end_turn"), "stop")
        if json_answer and finish == "tool_calls":
            finish = "stop"  # the forced tool of a JSON response format: its input is the answer
        provider_id = body.get("id")
        return ProviderResult(
            content=text,
            finish_reason=finish,
            usage=usage_of(body.get("usage")),
            model=str(body.get("model") or ""),
            provider_id=str(provider_id) if provider_id is not None else None,
            tool_calls=calls or None,
        )

    # -- errors -----------------------------------------------------------------------------------

    def map_error(self, status: int, body: dict[str, Any] | None, headers: Mapping[str, str]) -> GatewayError:
        f = error_fields(body)
        message = clean_message(f["message"], f"Anthropic returned HTTP {status}")
        etype = (f["type"] or "").lower()

        def err(
            t: ErrorType,
            retryable: bool | None = None,
            retry_after: float | None = None,
        ) -> GatewayError:
            return GatewayError(
                t,
                message,
                retryable=retryable,
                provider=PROVIDER,
                retry_after=retry_after,
            )

        if status == 401:
            return err(ErrorType.AUTHENTICATION, False)
        if status == 403:
            return err(ErrorType.PERMISSION, False)
        if status == 402 or etype == "billing_error" or _BILLING_WORDING.search(message):
            # Out of credit: like OpenAI's insufficient_quota, retrying will not help.
            return err(ErrorType.RATE_LIMIT, False)
        if status == 429:
            return err(ErrorType.RATE_LIMIT, True, retry_after_from(headers))
        if status == 408:
            return err(ErrorType.TIMEOUT, True, retry_after_from(headers))
        if status >= 500:  # 500 api_error, 529 overloaded_error, 502/503/504
            return err(ErrorType.SERVICE_UNAVAILABLE, True, retry_after_from(headers))
        if status == 400 and _CONTEXT_WORDING.search(message):
            return err(ErrorType.CONTEXT_LENGTH, False)
        # 400 invalid_request_error, 404 not_found_error, 413 request_too_large, other 4xx
        return err(ErrorType.INVALID_REQUEST, False)

    def map_transport_error(self, exc: BaseException) -> GatewayError:
        return map_transport_error(exc, PROVIDER)


def usage_of(raw: Any) -> Usage:
    """An answer's `usage` object as the gateway counts it: cache reads and writes are prompt tokens."""
    if not isinstance(raw, dict):
        return Usage()
    cache_read = as_int(raw.get("cache_read_input_tokens"))
    cache_write = as_int(raw.get("cache_creation_input_tokens"))
    return Usage(
        prompt_tokens=as_int(raw.get("input_tokens")) + cache_read + cache_write,
        completion_tokens=as_int(raw.get("output_tokens")),
        cached_prompt_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
