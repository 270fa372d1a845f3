"""The provider-neutral pieces of a streamed completion, as the adapters parse them and Redis relays them.

A provider's stream (OpenAI's `chat.completion.chunk` SSE, Anthropic's `message_start` ...
`message_stop` events) is parsed by its adapter into deltas; the worker relays each batch of deltas
that arrived together to the API processes that hold the stream's clients, which write them in the
client's format (OpenAI chunks on `/v1`, the gateway's own events on `/api/v1`). The stream's end is
not a delta: it is the request's stored outcome (usage, cost, latency, attempts), as for every request.

On the wire between worker and API a delta is a small JSON object with one-letter keys (`as_wire`):
`{"c": text}` for content, `{"t": index, "i": id, "n": name, "a": arguments}` for a fragment of a
tool call (keys present only when the provider sent them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A fragment of the assistant's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call: the call's position among the message's calls, its id and name (in
    its first fragment), and a piece of its JSON arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


StreamDelta = TextDelta | ToolCallDelta


def as_wire(delta: StreamDelta) -> dict[str, Any]:
    """A delta as relayed through Redis (see the module doc)."""
    if isinstance(delta, TextDelta):
        return {"c": delta.text}
    out: dict[str, Any] = {"t": delta.index, "a": delta.arguments}
    if delta.id is not None:
        out["i"] = delta.id
    if delta.name is not None:
        out["n"] = delta.name
    return out


def encode_delta(delta: StreamDelta) -> bytes:
    """A delta as relayed through Redis: its wire object's JSON."""
    return orjson.dumps(as_wire(delta))


def from_wire(obj: dict[str, Any]) -> StreamDelta:
    """The inverse of `as_wire`."""
    if "c" in obj:
        return TextDelta(str(obj["c"]))
    return ToolCallDelta(int(obj["t"]), obj.get("i"), obj.get("n"), str(obj.get("a", "")))
