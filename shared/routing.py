"""Which provider serves a request, and which model it asks for there."""

from __future__ import annotations

from shared.capabilities import unserved
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall
from shared.settings import Settings

PROVIDERS = ("openai", "anthropic")
_FAMILY_PREFIXES = {
    "openai": ("gpt-", "o1", "o3", "o4", "chatgpt-"),
    "anthropic": ("claude-",),
}


def family_of(model: str) -> str | None:
    lowered = model.lower()
    for provider, prefixes in _FAMILY_PREFIXES.items():
        if lowered.startswith(prefixes):
            return provider
    return None


def default_model(provider: str, settings: Settings) -> str:
    return settings.openai_default_model if provider == "openai" else settings.anthropic_default_model


def map_model(model: str, target: str, settings: Settings) -> str:
    """The model to ask `target` for when a request for `model` moves there (failover, routing)."""
    if family_of(model) in (target, None):
        return model
    return settings.failover_model_map.get(model) or default_model(target, settings)


def choose(
    provider: str | None,
    model: str | None,
    settings: Settings,
    unavailable: frozenset[str] = frozenset(),
    call: ProviderCall | None = None,
) -> tuple[str, str]:
    """Explicit provider; else the model's family; else the primary. With failover on, a provider
    known to be unavailable (breaker open, unhealthy) is skipped unless the caller named it. A provider
    that cannot serve all of `call` (`shared/capabilities.py`) is never chosen: the other one is, and
    a caller naming it gets a 400 naming the parameter."""
    if provider is not None:
        chosen = provider
        lacking = unserved(chosen, call) if call is not None else None
        if lacking is not None:
            raise GatewayError(
                ErrorType.INVALID_REQUEST,
                f"`{lacking}` is not supported by provider {chosen!r}; leave `provider` out to be routed to one"
                " that supports it",
                param=lacking,
            )
    else:
        chosen = (family_of(model) if model else None) or settings.primary_llm_provider
        other = settings.other_provider(chosen)
        lacking = unserved(chosen, call) if call is not None else None
        if lacking is not None:
            other_lacks = unserved(other, call) if call is not None else None
            if other_lacks is not None:
                raise GatewayError(
                    ErrorType.INVALID_REQUEST,
                    f"no provider serves this request: {chosen} does not support `{lacking}` and {other}"
                    f" does not support `{other_lacks}`",
                    param=lacking,
                )
            chosen = other
        elif (
            settings.enable_llm_failover
            and chosen in unavailable
            and other not in unavailable
            and (call is None or unserved(other, call) is None)
        ):
            chosen = other
    if model is None:
        return chosen, default_model(chosen, settings)
    family = family_of(model)
    if family is not None and family != chosen and provider is not None and model not in settings.failover_model_map:
        raise GatewayError(
            ErrorType.INVALID_REQUEST,
            f"model {model!r} is not served by provider {provider!r}",
            param="model",
        )
    return chosen, map_model(model, chosen, settings)
