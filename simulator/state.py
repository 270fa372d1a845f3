"""Per-process simulator state: latency, keys, faults, counters and the request recorder."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import deque
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from simulator.faults import FaultRule

ARRIVALS_KEPT = 20_000
REQUESTS_KEPT = 1_000
DEFAULT_REPLY_TOKENS = 64
DEFAULT_CONTEXT_LIMITS: dict[str, dict[str, int]] = {
    "openai": {"gpt-4": 8192},
    "anthropic": {},
}
DEFAULT_CONTEXT_LIMIT = {"openai": 128_000, "anthropic": 200_000}
# a stream accepted is `started`, then ends in exactly one of the others
STREAM_OUTCOMES = ("started", "completed", "client_closed", "error_event", "dropped")
_SECRET_HINTS = ("key", "auth", "secret", "token", "cookie", "password")


@lru_cache(maxsize=1024)
def fingerprint(secret: str) -> str:
    """`sha256:` + the first 8 hex digits of sha256(secret): how the recorder shows keys."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def redact_header(name: str, value: str) -> str:
    if not any(h in name for h in _SECRET_HINTS):
        return value
    scheme, sep, rest = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic", "token") and rest:
        return f"{scheme} {fingerprint(rest.strip())}"
    return fingerprint(value)


@dataclass(slots=True)
class ProviderState:
    name: str
    latency_ms: float
    jitter_ms: float = 0.0
    allow: set[str] | None = None
    revoked: set[str] = field(default_factory=set)
    faults: list[FaultRule] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, int] = field(default_factory=dict)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=ARRIVALS_KEPT))
    recorded: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUESTS_KEPT))
    reply_tokens: int = DEFAULT_REPLY_TOKENS
    context_limits: dict[str, int] = field(default_factory=dict)
    default_context_limit: int = 0
    strict_models: bool = False
    stream_chunks: int | None = None  # content chunks a streamed text is split into; None: one per token
    stream_interval_ms: float = 0.0  # gap between content chunks
    streams: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAM_OUTCOMES, 0))

    def __post_init__(self) -> None:
        if not self.context_limits:
            self.context_limits = dict(DEFAULT_CONTEXT_LIMITS[self.name])
        if not self.default_context_limit:
            self.default_context_limit = DEFAULT_CONTEXT_LIMIT[self.name]

    def clear(self, latency_ms: float) -> None:
        """Back to start-up settings in place (requests in flight keep their reference)."""
        fresh = ProviderState(self.name, latency_ms)
        for f in fields(self):
            if f.name != "in_flight":
                setattr(self, f.name, getattr(fresh, f.name))

    def key_ok(self, key: str) -> bool:
        if key in self.revoked:
            return False
        return self.allow is None or key in self.allow

    def context_limit(self, model: str) -> int:
        return self.context_limits.get(model, self.default_context_limit)

    def count(self, outcome: str) -> None:
        self.by_status[outcome] = self.by_status.get(outcome, 0) + 1

    def stats(self, arrivals: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "by_path": dict(self.by_path),
            "in_flight": self.in_flight,
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "faults": len(self.faults),
            "streams": dict(self.streams),
        }
        if arrivals:
            out["arrivals"] = list(self.arrivals)
        return out


class SimState:
    def __init__(self, latency_ms: float = 20.0, seed: int | None = None) -> None:
        self.start_latency_ms = latency_ms
        self.rng = random.Random(seed)
        self.providers = {name: ProviderState(name, latency_ms) for name in ("openai", "anthropic")}
        self.next_rule = 0
        self.next_record = 0
        self.release = asyncio.Event()  # set to let every hung request go
        self.reset()

    def reset(self) -> None:
        """Back to start-up: no faults or key rules, zero counters (in_flight is a live gauge)."""
        for ps in self.providers.values():
            ps.clear(self.start_latency_ms)
        self.release_hung()

    def release_hung(self) -> None:
        """Let every request held by a `hang` fault go on (it is then answered normally)."""
        self.release.set()
        self.release = asyncio.Event()

    def new_rule_id(self) -> str:
        self.next_rule += 1
        return f"fault-{self.next_rule}"

    def record(
        self,
        ps: ProviderState,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        parsed: Any,
        body_ok: bool,
    ) -> None:
        hdrs: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1").lower()
            value = redact_header(name, raw_value.decode("latin-1"))
            hdrs[name] = f"{hdrs[name]}, {value}" if name in hdrs else value
        self.next_record += 1
        entry: dict[str, Any] = {
            "seq": self.next_record,
            "time": time.time(),
            "provider": ps.name,
            "method": method,
            "path": path,
            "query": query.decode("latin-1"),
            "headers": hdrs,
            "json": parsed if body_ok else None,
        }
        if not body_ok and body:
            entry["body"] = body[:10_000].decode("utf-8", "replace")
        ps.recorded.append(entry)

    def recorded(self, provider: str | None, limit: int) -> list[dict[str, Any]]:
        """The last `limit` requests, oldest first (both providers merged if provider is None)."""
        if provider is not None:
            items = list(self.providers[provider].recorded)
        else:
            items = sorted(
                (e for ps in self.providers.values() for e in ps.recorded),
                key=lambda e: e["seq"],
            )
        return items[-limit:] if limit > 0 else []
