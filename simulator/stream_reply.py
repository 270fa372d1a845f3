"""A streamed answer, provider-neutral: its events encoded up front but for the content chunks.

A content chunk's event is a template filled with the piece's JSON string, so each chunk costs one
small `orjson.dumps` and a concatenation: benchmarks stream thousands of chunks a second through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.asgi import Headers
from simulator.faults import FaultRule
from simulator.tokens import CHARS_PER_TOKEN

PIECE = "\x00piece\x00"  # stands for a content piece in a template; never in a simulated text
_PIECE_JSON = orjson.dumps(PIECE)


@dataclass(frozen=True, slots=True)
class StreamReply:
    headers: Headers  # the provider's own (request ids), besides content-type and cache-control
    opening: bytes  # the events before the content, sent with the response head
    pieces: list[str]  # the text, split into the content chunks
    chunk: Callable[[str], bytes]  # a content piece -> its event(s)
    closing: bytes  # the events after the content, the end marker included
    error: Callable[[FaultRule], bytes]  # the provider's mid-stream error event


def split_text(text: str, chunks: int | None) -> list[str]:
    """`text` in `chunks` non-empty pieces of near-equal length (fewer if the text is shorter);
    None: one piece per token, as a provider streams."""
    if chunks is None:
        return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]
    n = min(chunks, len(text))
    size = len(text)
    return [text[i * size // n : (i + 1) * size // n] for i in range(n)]


def template(event: Callable[[Any], bytes], shape: Any) -> Callable[[str], bytes]:
    """`event(shape)` as a function of the piece that stands at `PIECE` in `shape`."""
    whole = event(shape)
    if whole.count(_PIECE_JSON) != 1:
        raise ValueError("the shape must hold PIECE exactly once")
    head, _, tail = whole.partition(_PIECE_JSON)
    return lambda piece: head + orjson.dumps(piece) + tail
