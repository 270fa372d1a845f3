"""Provider registry: adding a provider is one adapter file and one line here."""

from __future__ import annotations

from collections.abc import Callable

from shared.settings import Settings
from workers.providers.anthropic import AnthropicAdapter
from workers.providers.base import HttpRequest, ProviderAdapter
from workers.providers.openai import OpenAIAdapter

REGISTRY: dict[str, Callable[[Settings], ProviderAdapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
}


def build_adapter(name: str, settings: Settings) -> ProviderAdapter:
    return REGISTRY[name](settings)


__all__ = ["REGISTRY", "HttpRequest", "ProviderAdapter", "build_adapter"]
