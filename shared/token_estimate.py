"""A call's tokens, estimated before it is made: what the token buckets reserve, reconciled afterwards.

The prompt is counted as providers roughly do (about 4 characters a token, plus a few tokens of framing
per message); the completion as its full budget (maxTokens, or the provider's default), since the
reservation must cover the worst case. The real usage replaces the estimate once the call ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.schemas import ProviderCall
from shared.settings import Settings

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3  # role and separators around each message
REPLY_PRIMING = 3  # the tokens that open the assistant's reply
# an image, whatever its size: about what both providers charge for a large one (OpenAI's high detail
# at 1024x1024 is 765, Anthropic's 1.15 megapixels about 1600); reserving more is refunded afterwards
IMAGE_TOKENS = 1600


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def content_tokens(message: Mapping[str, Any]) -> int:
    """A message's content and tool calls: text by its length, an image as IMAGE_TOKENS."""
    content = message.get("content")
    if content.__class__ is str:
        return text_tokens(content)
    total = 0
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            total += text_tokens(part.get("text", ""))
        elif kind == "image_url":
            total += IMAGE_TOKENS
        else:  # audio, files: their encoded size is the best cheap guess
            total += text_tokens(str(part))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        total += text_tokens(function.get("name", "")) + text_tokens(function.get("arguments", ""))
    return total


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + content_tokens(message)
        name = message.get("name")
        if name:
            total += text_tokens(name)
    return total


def completion_budget(provider: str, max_tokens: int | None, settings: Settings) -> int:
    """The most tokens the reply may take: maxTokens, else what the provider's adapter would send."""
    if max_tokens:
        return max_tokens
    if provider == "anthropic":
        return settings.anthropic_default_max_tokens
    return settings.rate_limit_default_completion_tokens


def estimate_call(call: ProviderCall, provider: str, settings: Settings) -> int:
    if call.endpoint == "embeddings":  # the inputs only: nothing is generated
        return sum(text_tokens(m["content"]) for m in call.messages)
    return prompt_tokens(call.messages) + completion_budget(provider, call.max_tokens, settings)
