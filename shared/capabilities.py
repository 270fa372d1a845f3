"""What each provider can serve of a call, so that nothing a caller asked for is silently dropped.

Every call is written in OpenAI's terms (`ProviderCall`), so OpenAI serves all of it; Anthropic has no
equivalent for a few parameters and content parts. A call needing one of them is routed only to
OpenAI (`shared/routing.py`), is never failed over to Anthropic (`workers/processor.py`), and is
refused with a 400 naming the parameter when the caller insists on Anthropic.
"""

from __future__ import annotations

from typing import Any

from shared.chat_parts import OPENAI_ONLY_PARTS
from shared.schemas import ProviderCall

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
    "store": None,
}


def unserved(provider: str, call: ProviderCall) -> str | None:
    """The first parameter of `call` that `provider` cannot serve (its name as the caller wrote it in
    OpenAI's terms, e.g. `n`, `logprobs`, `messages[1].content[0]`), or None when it can serve it all."""
    if provider != "anthropic":
        return None
    options = call.options
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
