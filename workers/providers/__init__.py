"""Provider registry: adding a provider is one adapter file and one line here."""

from __future__ import annotations

from workers.providers.anthropic import AnthropicAdapter
from workers.providers.base import HttpRequest, ProviderAdapter
from workers.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
}

__all__ = ["ADAPTERS", "HttpRequest", "ProviderAdapter"]
