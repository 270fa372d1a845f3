"""A call's tokens, estimated before it is made: what the token buckets reserve, reconciled afterwards.

The prompt is counted as providers roughly do (about 4 characters a token, plus a few tokens of framing
per message); the completion as its full budget (maxTokens, or the provider's default), since the
reservation must cover the worst case. The real usage replaces the estimate once the call ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.schemas import ProviderCall
from shared.settings import Settings

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3  # role and separators around each message
REPLY_PRIMING = 3  # the tokens that open the assistant's reply


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[Mapping[str, str | None]]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + text_tokens(message.get("content") or "")
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
    return prompt_tokens(call.messages) + completion_budget(provider, call.max_tokens, settings)
