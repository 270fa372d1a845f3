"""Privacy-compliant request, response and error logs, appended to one Redis stream.

Everything a caller wrote or a provider answered is PII-masked and truncated (`shared.pii`) before it
is built into an entry, so nothing personal is ever stored. Entries are appended with XADD, whose
auto ids are millisecond timestamps: reading a time range is an XRANGE. The XADD also caps the stream
at `LOG_REDIS_MAX_ENTRIES` (an approximate MAXLEN: Redis drops whole stream nodes, at no extra cost),
so Redis stays bounded whatever else runs; the log keeper (workers/log_keeper.py) adds the byte cap
and, with no log store, the age. With `LOG_STORE_URL` set the stream is only a buffer that the keeper
drains into PostgreSQL (shared/log_store.py), which then serves the reads. A read never returns an
entry older than the retention, even one not trimmed yet.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared import keys, pii
from shared.errors import GatewayError
from shared.schemas import Cost, JobPayload, ProviderResult
from shared.settings import Settings
from shared.token_estimate import content_tokens

LogType = Literal["request", "response", "error"]
LOG_TYPES: Final = ("request", "response", "error")
MAX_READ: Final = 1000
_SCAN_BATCH: Final = 500
_SCAN_LIMIT: Final = 50_000  # entries one filtered read looks through at most


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """About four characters a token, plus each message's framing: a cheap, tokenizer-free estimate."""
    return sum(content_tokens(m) + 4 for m in messages) + 3


def _masked_messages(messages: list[dict[str, Any]], budget: int) -> tuple[list[dict[str, Any]], int]:
    """Masked messages whose content fits a shared character budget; and how many were left out.
    Content parts are kept as parts: text masked, an image, audio or file only as a placeholder with its
    size; a tool call's arguments are masked as text."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if budget <= 0:
            return out, len(messages) - i
        raw = message.get("content") or ""
        if isinstance(raw, str):
            content: Any = pii.mask_and_truncate(raw, budget)
            budget -= min(len(raw), budget)
        else:
            content = []
            for part in raw:
                text = part.get("text")
                if isinstance(text, str):
                    content.append({"type": "text", "text": pii.mask_and_truncate(text, max(budget, 0))})
                    budget -= len(text)
                else:
                    content.append({"type": str(part.get("type")), "placeholder": _placeholder(part)})
        entry: dict[str, Any] = {"role": message.get("role", ""), "content": content}
        calls = message.get("tool_calls")
        if calls:
            entry["toolCalls"] = [_masked_call(c, max_chars=max(budget, 0)) for c in calls]
        out.append(entry)
    return out, 0


def _placeholder(part: dict[str, Any]) -> str:
    """What a log says of a non-text part: its kind and size, nothing of its bytes or address."""
    body = part.get(str(part.get("type"))) or {}
    url = body.get("url") if isinstance(body, dict) else None
    if isinstance(url, str) and url.startswith("data:"):
        return f"[inline data, {len(url.partition(',')[2]) * 3 // 4} bytes]"
    if isinstance(url, str):
        return f"[linked image, URL of {len(url)} characters]"
    return f"[{part.get('type')}, {len(orjson.dumps(body))} bytes encoded]"


def _masked_call(call: dict[str, Any], max_chars: int) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": pii.mask_and_truncate(str(function.get("arguments", "")), max_chars),
    }


def _base(kind: LogType, payload: JobPayload, provider: str, model: str) -> dict[str, Any]:
    return {
        "type": kind,
        "requestId": payload.request_id,
        "correlationId": payload.correlation_id,
        "provider": provider,
        "model": model,
        "kind": payload.kind,
        "tenant": payload.tenant,  # the console shows a user its own tenant's entries only
    }


def request_entry(payload: JobPayload, max_chars: int) -> dict[str, Any]:
    """The input parameters (masked) and the estimated prompt tokens."""
    call = payload.call
    messages, omitted = _masked_messages(call.messages, max_chars)
    entry = _base("request", payload, payload.provider, call.model)
    entry["params"] = {
        "messages": messages,
        "messageCount": len(call.messages),
        "messagesOmitted": omitted,
        "maxTokens": call.max_tokens,
        "temperature": call.temperature,
        "topP": call.top_p,
        "stop": pii.mask_value(call.stop, max_chars),
        "user": pii.mask_and_truncate(call.user, 256) if call.user else None,
    }
    entry["estimatedTokens"] = estimate_tokens(call.messages)
    entry["createdAt"] = iso_ms(payload.created_ms) if payload.created_ms else None
    return entry


def response_entry(
    payload: JobPayload,
    provider: str,
    result: ProviderResult,
    cost: Cost | None,
    latency_ms: float,
    max_chars: int,
    cancelled: bool = False,
) -> dict[str, Any]:
    """The answer (masked), its token usage and its cost; `cancelled`: a stream whose client went
    away, with what it had produced."""
    entry = _base("response", payload, provider, result.model)
    entry.update(
        content=pii.mask_and_truncate(result.content, max_chars),
        finishReason="cancelled" if cancelled else result.finish_reason,
        usage=result.usage.to_api(),
        cost=cost.to_api() if cost else None,
        latencyMs=round(latency_ms, 2),
        attempts=len(payload.attempts),
    )
    if result.tool_calls:
        entry["toolCalls"] = [_masked_call(c.to_wire(), max_chars) for c in result.tool_calls]
    return entry


def error_entry(
    payload: JobPayload,
    provider: str,
    error: GatewayError,
    latency_ms: float,
    failed_over: bool,
    max_chars: int,
) -> dict[str, Any]:
    """The error and the retry history. Providers echo prompts in error messages: mask them too."""
    entry = _base("error", payload, provider, payload.call.model)
    entry.update(
        error=pii.mask_value(error.to_dict(), max_chars),
        attempts=pii.mask_value(payload.attempts, max_chars),
        failedOver=failed_over,
        latencyMs=round(latency_ms, 2),
    )
    return entry


@dataclass(frozen=True, slots=True)
class LogPage:
    entries: list[dict[str, Any]]
    next_cursor: str | None


class LogReader(Protocol):
    """What the `/logs` route reads from: the Redis stream, or the log store."""

    async def read(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: str | None = None,
        provider: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now_ms: int | None = None,
    ) -> LogPage: ...


class RequestLog:
    def __init__(self, redis: Redis, *, retention_s: float, max_entries: int = 500_000) -> None:
        self.redis = redis
        self.retention_ms = int(retention_s * 1000)
        self.max_entries = max_entries
        self.key = keys.request_logs()

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> RequestLog:
        return cls(redis, retention_s=settings.log_retention_days * 86400, max_entries=settings.log_redis_max_entries)

    def add(self, pipe: Pipeline, entry: Mapping[str, Any], now_ms: int | None = None) -> None:
        """Queue one entry's XADD (capping the stream's length) on a pipeline.

        `now_ms` pins the entry's timestamp (tests); by default Redis stamps it.
        """
        fields = {"t": entry["type"], "p": entry.get("provider") or "", "d": orjson.dumps(entry)}
        entry_id = "*" if now_ms is None else f"{now_ms}-*"
        pipe.xadd(self.key, fields, id=entry_id, maxlen=self.max_entries, approximate=True)  # type: ignore[arg-type]

    async def write(self, *entries: Mapping[str, Any], now_ms: int | None = None) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                self.add(pipe, entry, now_ms)
            await pipe.execute()

    async def read(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: str | None = None,
        provider: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now_ms: int | None = None,
    ) -> LogPage:
        """Entries in [start, end] oldest first, filtered by type and provider; `next_cursor` resumes."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        oldest = now - self.retention_ms
        low = f"({cursor}" if cursor else str(max(start_ms or 0, oldest, 0))
        high = str(end_ms) if end_ms is not None else "+"
        limit = max(1, min(limit, MAX_READ))
        out: list[dict[str, Any]] = []
        scanned = 0
        last_id: str | None = None
        while len(out) < limit and scanned < _SCAN_LIMIT:
            batch = await self.redis.xrange(self.key, min=low, max=high, count=_SCAN_BATCH)
            if not batch:
                return LogPage(out, None)
            for raw_id, fields in batch:
                scanned += 1
                last_id = raw_id.decode()
                if int(last_id.split("-", 1)[0]) < oldest:
                    continue
                if kind and fields.get(b"t", b"").decode() != kind:
                    continue
                if provider and fields.get(b"p", b"").decode() != provider:
                    continue
                out.append(_decode(last_id, fields))
                if len(out) >= limit:
                    return LogPage(out, last_id)
            low = f"({last_id}"
            if len(batch) < _SCAN_BATCH:
                return LogPage(out, None)
        return LogPage(out, last_id)


def _decode(entry_id: str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    return entry_view(entry_id, fields.get(b"d", b"{}"))


def entry_view(entry_id: str, data: bytes | str) -> dict[str, Any]:
    """An entry as `/logs` shows it, from its id ("<ms>-<seq>") and its stored JSON."""
    decoded: dict[str, Any] = orjson.loads(data)
    return {"id": entry_id, "timestamp": iso_ms(int(entry_id.split("-", 1)[0])), **decoded}
