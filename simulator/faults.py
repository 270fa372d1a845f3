"""Fault rules: what to do to the next requests of a provider.

Every request: `status` (an error answer), `hang`, `slow` (added latency), `drop` (connection closed
without an answer). Streamed requests only (`"stream": true`; other requests pass them by without
using them up): `first_byte` (added latency before the response head, like `slow`), and, after
`after_chunks` content chunks, `stream_error` (the provider's mid-stream error event, then the end of
the response), `stream_drop` (connection closed without the end marker) and `stream_stall` (no
bytes for `seconds`, or until the faults are cleared, then the rest of the stream).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("status", "hang", "slow", "drop", "first_byte", "stream_error", "stream_drop", "stream_stall")
MID_STREAM_MODES = ("stream_error", "stream_drop", "stream_stall")
STREAM_ONLY_MODES = ("first_byte", *MID_STREAM_MODES)
LATENCY_MODES = ("slow", "first_byte")  # add up, and let the next rules apply too
PROVIDERS = ("openai", "anthropic")


class RuleError(ValueError):
    """A `POST /_control/faults` body that does not describe a valid rule."""


@dataclass(slots=True)
class FaultRule:
    id: str
    provider: str
    mode: str
    status: int = 500
    count: int | None = None  # remaining applications; None = until reset
    probability: float = 1.0
    retry_after: float | None = None
    latency_ms: float = 0.0
    seconds: float | None = None
    error_type: str | None = None
    message: str | None = None
    code: str | None = None
    model: str | None = None  # only requests for this model
    after_chunks: int = 0  # mid-stream modes: content chunks sent before the fault
    hits: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FaultDecision:
    extra_latency_ms: float = 0.0
    rule: FaultRule | None = None  # a terminal rule (every mode but the latency ones)


def _num(body: dict[str, Any], name: str, lo: float, hi: float | None = None) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RuleError(f"{name} must be a number")
    if v < lo or (hi is not None and v > hi):
        raise RuleError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}]")
    return float(v)


def _str(body: dict[str, Any], name: str) -> str | None:
    v = body.get(name)
    if v is not None and not isinstance(v, str):
        raise RuleError(f"{name} must be a string")
    return v


def parse_rule(body: Any, rule_id: str) -> FaultRule:
    """Validate a `POST /_control/faults` body; RuleError with a readable message if wrong."""
    if not isinstance(body, dict):
        raise RuleError("body must be a JSON object")
    provider = body.get("provider")
    if provider not in PROVIDERS:
        raise RuleError("provider must be 'openai' or 'anthropic'")
    mode = body.get("mode", "status")
    if mode not in MODES:
        raise RuleError(f"mode must be one of {', '.join(MODES)}")
    status = body.get("status", 500)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise RuleError("status must be an integer in 400..599")
    count = body.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise RuleError("count must be a positive integer (omit it for 'until reset')")
    probability = _num(body, "probability", 0.0, 1.0)
    latency_ms = _num(body, "latency_ms", 0.0)
    if mode in LATENCY_MODES and latency_ms is None:
        raise RuleError(f"mode '{mode}' needs latency_ms")
    after_chunks = body.get("after_chunks")
    if after_chunks is not None:
        if mode not in MID_STREAM_MODES:
            raise RuleError(f"after_chunks only applies to modes {', '.join(MID_STREAM_MODES)}")
        if isinstance(after_chunks, bool) or not isinstance(after_chunks, int) or after_chunks < 0:
            raise RuleError("after_chunks must be an integer >= 0")
    return FaultRule(
        id=rule_id,
        provider=provider,
        mode=mode,
        status=status,
        count=count,
        probability=1.0 if probability is None else probability,
        retry_after=_num(body, "retry_after", 0.0),
        latency_ms=latency_ms or 0.0,
        seconds=_num(body, "seconds", 0.0),
        error_type=_str(body, "error_type"),
        message=_str(body, "message"),
        code=_str(body, "code"),
        model=_str(body, "model"),
        after_chunks=after_chunks or 0,
    )


def decide(rules: list[FaultRule], model: str | None, streamed: bool, rng: random.Random) -> FaultDecision:
    """Apply the rules in order: latency rules add up, the first terminal rule that fires wins.

    A rule's count is only used up when it fires (stream-only rules never fire for a request that
    is not streamed); expired rules are removed from the list.
    """
    decision = FaultDecision()
    expired = False
    for rule in rules:
        if rule.model is not None and rule.model != model:
            continue
        if not streamed and rule.mode in STREAM_ONLY_MODES:
            continue
        if rule.probability < 1.0 and rng.random() >= rule.probability:
            continue
        rule.hits += 1
        if rule.count is not None:
            rule.count -= 1
            expired = expired or rule.count <= 0
        if rule.mode in LATENCY_MODES:
            decision.extra_latency_ms += rule.latency_ms
            continue
        decision.rule = rule
        break
    if expired:
        rules[:] = [r for r in rules if r.count is None or r.count > 0]
    return decision
