"""Programmatic use, as in SPEC.md: `create_gateway(...)`, `await gateway.initialize()`, `complete()`.

The gateway object is a client of the same queue the HTTP API uses: requests are enqueued, served by
the provider worker pools, and awaited through a reply channel. Given provider API keys, it also
runs one in-process worker per enabled provider, so a notebook needs nothing but Redis; without
keys it relies on the worker pools already running (`make run`, the Procfile, compose).

    gateway = create_gateway(
        providers={"openai": {"enabled": True, "apiKey": os.environ["OPENAI_API_KEY"]},
                   "anthropic": {"enabled": True, "apiKey": os.environ["ANTHROPIC_API_KEY"]}},
        gateway={"primaryProvider": "openai", "enableFailover": True, "enableCaching": True},
    )
    await gateway.initialize()
    response = await gateway.complete([{"role": "user", "content": "Hello!"}], max_tokens=150)
    print(response.content, response.cost.total_cost)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from plumbing.redis_connection import connect
from shared.admission import build_payload
from shared.durability import check_redis
from shared.errors import ErrorType, GatewayError
from shared.queue import Outcome, RequestQueue
from shared.routing import PROVIDERS
from shared.schemas import ChatRequest, Cost, EmbeddingsRequest, Usage
from shared.settings import Settings, get_settings
from shared.waiter import Waiter
from workers.runtime import build_worker

_PROVIDER_FIELDS = {"apiKey": "api_key", "baseUrl": "base_url", "organization": "organization"}
_GATEWAY_FIELDS = {
    "primaryProvider": "primary_llm_provider",
    "enableFailover": "enable_llm_failover",
    "enableCaching": "enable_llm_caching",
    "redisUrl": "redis_url",
    "requestTimeout": "request_timeout_s",
}


@dataclass(frozen=True, slots=True)
class Completion:
    id: str
    provider: str
    model: str
    content: str
    finish_reason: str
    usage: Usage
    cost: Cost | None
    latency_ms: float | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False
    # the calls of the tools the model made, in OpenAI's shape ({id, type, function: {name, arguments}})
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    choices: list[dict[str, Any]] = field(default_factory=list)  # the further choices asked for with `n`
    embeddings: list[Any] = field(default_factory=list)  # an embeddings request's vectors, in input order

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Completion:
        usage = data.get("usage") or {}
        cost = data.get("cost")
        return cls(
            id=data["id"],
            provider=data["provider"],
            model=data["model"],
            content=data["content"],
            finish_reason=data["finishReason"],
            usage=Usage(
                usage.get("promptTokens", 0),
                usage.get("completionTokens", 0),
                usage.get("cachedTokens", 0),
                usage.get("cacheWriteTokens", 0),
                usage.get("reasoningTokens", 0),
            ),
            cost=Cost(cost["promptCost"], cost["completionCost"], cost["currency"]) if cost else None,
            latency_ms=data.get("latencyMs"),
            attempts=list(data.get("attempts") or []),
            cached=bool(data.get("cached", False)),
            tool_calls=list(data.get("toolCalls") or []),
            refusal=data.get("refusal"),
            logprobs=data.get("logprobs"),
            choices=list(data.get("choices") or []),
            embeddings=list(data.get("embeddings") or []),
        )


def _settings_from(
    base: Settings, providers: Mapping[str, Mapping[str, Any]] | None, gateway: Mapping[str, Any] | None
) -> tuple[Settings, tuple[str, ...]]:
    """SPEC.md's camelCase options (snake_case works too) layered over the environment's settings."""
    updates: dict[str, Any] = {}
    enabled = []
    for name in PROVIDERS:
        options = (providers or {}).get(name, {} if providers else {"enabled": True})
        if (providers is not None and name not in providers) or not options.get("enabled", True):
            continue
        enabled.append(name)
        for key, value in options.items():
            attr = _PROVIDER_FIELDS.get(key, key)
            if attr == "enabled" or value is None:
                continue
            if attr not in _PROVIDER_FIELDS.values():
                raise ValueError(f"unknown option {key!r} for provider {name!r}")
            updates[f"{name}_{attr}"] = value
    for key, value in (gateway or {}).items():
        attr = _GATEWAY_FIELDS.get(key, key)
        if attr not in Settings.model_fields:
            raise ValueError(f"unknown gateway option {key!r}")
        updates[attr] = value
    if not enabled:
        raise ValueError("at least one provider must be enabled")
    merged = {**base.model_dump(), **updates}
    return Settings(**merged), tuple(enabled)


class Gateway:
    def __init__(self, settings: Settings, enabled: Sequence[str], *, run_workers: bool) -> None:
        self.settings = settings
        self.enabled = tuple(enabled)
        self.run_workers = run_workers
        self._queue: RequestQueue | None = None
        self._waiter: Waiter | None = None
        self._workers: list[Any] = []
        self._worker_tasks: list[asyncio.Task[None]] = []

    async def initialize(self) -> None:
        redis = connect(self.settings.redis_address())
        await redis.ping()
        await check_redis(redis, self.settings.redis_durability, apply=self.settings.redis_durability_apply)
        self._queue = RequestQueue.from_settings(redis, self.settings)
        self._waiter = Waiter(redis)
        await self._waiter.start()
        if self.run_workers:
            await self._start_workers()

    async def _start_workers(self) -> None:
        for provider in self.enabled:
            if self.settings.api_key(provider):
                worker = build_worker(provider, self.settings, handle_signals=False)
                self._workers.append(worker)
                self._worker_tasks.append(asyncio.create_task(worker.async_run(), name=f"worker-{provider}"))

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Completion:
        """Complete a chat through the queue and wait for the answer; raises GatewayError on failure.
        `options` are the request's further fields (`tools`, `tool_choice`, `response_format`, `n`,
        `stop`...), as the HTTP API takes them; messages may carry content parts and tool calls."""
        request = ChatRequest.model_validate(
            {
                "messages": list(messages),
                "model": model,
                "provider": provider,
                "max_tokens": max_tokens,
                "temperature": temperature,
                **options,
            }
        )
        return await self._run(request, timeout)

    async def embed(
        self, texts: str | Sequence[str], *, model: str, dimensions: int | None = None, timeout: float | None = None
    ) -> Completion:
        """Embed text through the queue (OpenAI serves embeddings): the vectors are `.embeddings`."""
        inputs = texts if isinstance(texts, str) else list(texts)
        return await self._run(EmbeddingsRequest(input=inputs, model=model, dimensions=dimensions), timeout)

    async def _run(self, request: ChatRequest | EmbeddingsRequest, timeout: float | None) -> Completion:
        queue, waiter = self._require()
        disabled = frozenset(p for p in PROVIDERS if p not in self.enabled)
        payload = build_payload(request, self.settings, kind="sync", tenant="sdk", unavailable=disabled)
        wait_s = timeout or self.settings.request_timeout_s
        waiter.expect(payload.request_id)
        try:
            await queue.enqueue(payload, reply=waiter.channel)
        except BaseException:
            waiter.forget(payload.request_id)
            raise
        outcome = await waiter.wait(payload.request_id, wait_s)
        if outcome is None:
            raise GatewayError(ErrorType.TIMEOUT, f"no answer within {wait_s:g}s (request {payload.request_id})")
        return _completion_or_raise(outcome)

    def _require(self) -> tuple[RequestQueue, Waiter]:
        if self._queue is None or self._waiter is None:
            raise RuntimeError("call `await gateway.initialize()` first")
        return self._queue, self._waiter

    async def close(self) -> None:
        for worker in self._workers:
            worker.handle_sig(2)  # graceful: running jobs end within the stop grace, the rest go back
        for task in self._worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for worker in self._workers:
            with contextlib.suppress(Exception):
                await worker.close()
        self._workers.clear()
        self._worker_tasks.clear()
        if self._waiter is not None:
            await self._waiter.stop()
            await self._waiter.redis.aclose()
        self._queue = self._waiter = None

    async def __aenter__(self) -> Gateway:
        await self.initialize()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _completion_or_raise(outcome: Outcome) -> Completion:
    if outcome.status == "succeeded":
        return Completion.from_data(outcome.json())
    if outcome.status == "cancelled":
        raise GatewayError(ErrorType.CANCELLED, "the request was cancelled", retryable=False)
    raise GatewayError.from_dict(outcome.json())


def create_gateway(
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    gateway: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    run_workers: bool | None = None,
) -> Gateway:
    """Build a gateway client. `run_workers` defaults to: yes when any provider was given an apiKey."""
    merged, enabled = _settings_from(settings or get_settings(), providers, gateway)
    if run_workers is None:
        run_workers = any("apiKey" in o or "api_key" in o for o in (providers or {}).values())
    return Gateway(merged, enabled, run_workers=run_workers)
