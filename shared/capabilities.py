"""What each provider can serve of a call, so that nothing a caller asked for is silently dropped.

Every call is written in OpenAI's terms (`ProviderCall`); Anthropic has no equivalent for a few of
OpenAI's parameters and content parts, and OpenAI none for a few of Anthropic's (`top_k`, `thinking`,
beta features). A call needing one of them is routed only to the provider that has it
(`shared/routing.py`), is never failed over to the other (`workers/processor.py`), and is refused
with a 400 naming the parameter when the caller insists on the other.
"""

from __future__ import annotations

from typing import Any

from shared.chat_parts import OPENAI_ONLY_PARTS
from shared.schemas import ANTHROPIC_OPTIONS, ProviderCall

# OpenAI's parameters Anthropic has no equivalent for, with the value that asks for nothing (None:
# any value asks for something)
_ANTHROPIC_LACKS: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": None,
    "logit_bias": None,
    "seed": None,
    "frequency_penalty": None,
    "presence_penalty": None,
    "reasoning_effort": None,
    "service_tier": None,
    "store": False,  # false: nothing stored, which is all Anthropic does
}


# Anthropic's parameters OpenAI has no equivalent for (from `/v1/messages` or the gateway's own route)
_OPENAI_LACKS = tuple(sorted(ANTHROPIC_OPTIONS))


def unserved(provider: str, call: ProviderCall) -> str | None:
    """The first parameter of `call` that `provider` cannot serve (its name as the caller wrote it in
    OpenAI's terms, e.g. `n`, `logprobs`, `messages[1].content[0]`), or None when it can serve it all."""
    options = call.options
    if call.endpoint == "embeddings":
        return "embeddings" if provider == "anthropic" else None  # Anthropic has no embeddings
    if provider != "anthropic":
        if options:
            for name in _OPENAI_LACKS:
                if name in options:
                    return name
        return None
    if options:
        for name, neutral in _ANTHROPIC_LACKS.items():
            if name in options and options[name] != neutral:
                return name
    for i, message in enumerate(call.messages):
        content = message.get("content")
        if content.__class__ is list:
            for j, part in enumerate(content):
                if part.get("type") in OPENAI_ONLY_PARTS:
                    return f"messages[{i}].content[{j}]"
    return None
