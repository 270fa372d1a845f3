"""Wire shapes: the SPEC.md request body (camelCase) and the normalised forms the queue carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

Role = Literal["system", "user", "assistant"]
MAX_STOP = 4  # OpenAI's limit
# The limit is enforced by ChatRequest's validator (so a refusal names `stop`) and stated in the schema.
StopList = Annotated[
    list[StrictStr], WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP})
]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error"]


def integral(value: Any) -> Any:
    """A before-validator for the integers of strict models: JSON has one number type, and 150.0 is the
    integer 150 (as JSON Schema says); 150.5 stays a float, to be refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class CamelModel(BaseModel):
    # strict: a JSON value of the wrong type is refused, not coerced ("temperature": false is not 0.0)
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)


class ChatMessage(CamelModel):
    role: Role
    content: StrictStr = Field(max_length=2_000_000)
    name: str | None = Field(None, max_length=64)


class ChatRequest(CamelModel):
    """`POST /api/v1/llm/chat/completions` and `POST /api/v1/llm/jobs`.

    temperature is on OpenAI's 0..2 scale; the Anthropic adapter maps it to 0..1.
    """

    messages: list[ChatMessage] = Field(min_length=1, max_length=2048)
    model: str | None = Field(None, min_length=1, max_length=128)
    max_tokens: int | None = Field(None, gt=0, le=200_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: StopList | StrictStr | None = None
    provider: Literal["openai", "anthropic"] | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, Any] | None = None
    timeout: float | None = Field(
        None,
        gt=0,
        le=600,
        description="seconds: a synchronous request's deadline (no provider call starts after it); an async"
        " job's time budget once a worker starts it",
    )
    cache: bool | None = None
    stream: StrictBool | None = Field(
        None, description="answer as Server-Sent Events, a delta per event (synchronous route and async jobs)"
    )

    _integral_max_tokens = field_validator("max_tokens", mode="before")(integral)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return stops


@dataclass(slots=True)
class ProviderCall:
    """What an adapter is asked to send: provider-neutral, on the gateway's scales."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    user: str | None = None
    request_id: str | None = None
    stream: bool = False  # ask the provider to stream its answer (the adapter's `stream_parser` reads it)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_api(self) -> dict[str, int]:
        return {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.total_tokens,
        }


@dataclass(slots=True)
class Cost:
    prompt_cost: float
    completion_cost: float
    currency: str = "USD"

    @property
    def total_cost(self) -> float:
        return round(self.prompt_cost + self.completion_cost, 10)

    def to_api(self) -> dict[str, Any]:
        return {
            "promptCost": round(self.prompt_cost, 10),
            "completionCost": round(self.completion_cost, 10),
            "totalCost": self.total_cost,
            "currency": self.currency,
        }


@dataclass(slots=True)
class ProviderResult:
    """What an adapter parsed out of a successful provider answer."""

    content: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    provider_id: str | None = None


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    error: dict[str, Any] | None = None
    latency_ms: float | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provider": self.provider, "model": self.model, "error": self.error}
        if self.latency_ms is not None:
            out["latencyMs"] = round(self.latency_ms, 2)
        return out


# Interactive work first: the order in which a worker lets waiting calls take capacity (and, through
# `shared.keys.PRIORITY_OFFSET_MS`, the order in which it picks jobs up).
KIND_PRIORITY: dict[str, int] = {"sync": 0, "async": 1, "batch": 2}


@dataclass(slots=True)
class JobPayload:
    """The JSON a queue job carries: everything a worker needs, so it never reads the request back."""

    request_id: str
    provider: str
    call: ProviderCall
    attempts: list[dict[str, Any]] = field(default_factory=list)
    created_ms: int = 0
    # when the caller stops waiting (epoch ms): no provider call, retry or failover hop starts after it,
    # and a call under way is cut there (workers/processor.py). A synchronous request's is its arrival
    # plus its `timeout`; an async job's is set when a worker first starts it, from `budget_ms`.
    deadline_ms: int | None = None
    budget_ms: int | None = None  # an async job's `timeout`: its time budget once started (none: no limit)
    tenant: str | None = None
    kind: Literal["sync", "async", "batch"] = "sync"
    cache_key: str | None = None
    failover: bool = True  # False: this request stays on its provider (the admin provider test)
    correlation_id: str | None = None
    batch_id: str | None = None  # set on the items of a batch
    custom_id: str | None = None

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> JobPayload:
        data = dict(data)
        data["call"] = ProviderCall(**data["call"])
        return cls(**data)
