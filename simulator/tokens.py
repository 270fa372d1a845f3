"""Token counting (~4 characters a token) and the deterministic reply text."""

from __future__ import annotations

from dataclasses import dataclass

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
_FILLER = (
    " The quick brown fox jumps over the lazy dog while the simulator keeps counting tokens."
    " Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
) * 64


def count_tokens(text: str) -> int:
    """ceil(len / 4) without floats."""
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(total_chars: int, n_messages: int) -> int:
    return -(-total_chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * n_messages


def natural_reply(provider: str, last_user: str, n_tokens: int) -> str:
    """`Simulated <provider> reply to: <first 60 chars>` padded/truncated to exactly n_tokens*4 chars."""
    base = f"Simulated {provider} reply to: {last_user[:60]}"
    n_chars = max(0, n_tokens) * CHARS_PER_TOKEN
    while len(base) < n_chars:
        base += _FILLER
    return base[:n_chars]


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    tokens: int
    reason: str  # "stop" | "length" | "stop_sequence"
    stop_sequence: str | None = None


def complete(
    provider: str,
    last_user: str,
    reply_tokens: int,
    max_tokens: int | None,
    stops: list[str],
) -> Completion:
    """The reply a request gets: natural length, cut by a stop sequence or by max_tokens."""
    full = natural_reply(provider, last_user, reply_tokens)
    limit = len(full) if max_tokens is None else min(len(full), max_tokens * CHARS_PER_TOKEN)
    best: tuple[int, str] | None = None
    for seq in stops:
        if seq:
            i = full.find(seq)
            if i != -1 and i < limit and (best is None or i < best[0]):
                best = (i, seq)
    if best is not None:
        text = full[: best[0]]
        return Completion(text, count_tokens(text), "stop_sequence", best[1])
    if limit < len(full):
        text = full[:limit]
        return Completion(text, count_tokens(text), "length")
    return Completion(full, count_tokens(full), "stop")
