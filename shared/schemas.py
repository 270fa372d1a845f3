"""Wire shapes: the SPEC.md request body (camelCase) and the normalised forms the queue carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shared.camel import CamelModel, inline_defs, integral
from shared.chat_parts import MAX_TOOLS, PART_TYPES, ContentPart, ResponseFormat, Tool, ToolCall, ToolChoice, to_wire

__all__ = ["CamelModel", "integral"]  # re-exported: the routes' shapes build on them

Role = Literal["system", "developer", "user", "assistant", "tool"]
MAX_STOP = 4  # OpenAI's limit
MAX_CHOICES = 128  # OpenAI's limit on `n`
# The limit is enforced by ChatRequest's validator (so a refusal names `stop`) and stated in the schema.
StopList = Annotated[
    list[StrictStr], WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP})
]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error"]


MAX_CONTENT_CHARS = 2_000_000
_PARTS: TypeAdapter[list[ContentPart]] = TypeAdapter(Annotated[list[ContentPart], Field(max_length=2048)])
_CONTENT_SCHEMA = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_CONTENT_CHARS},
        inline_defs(_PARTS.json_schema(by_alias=True)),
        {"type": "null"},
    ]
}
_PART_TYPE_ERROR = f"a content part's type must be one of {', '.join(sorted(PART_TYPES))}"
# checked by ChatMessage's validator, so that a refusal names `messages.N.content`, not a union's branch
Content = Annotated[Any, WithJsonSchema(_CONTENT_SCHEMA)]


# the content parts each role takes (OpenAI's rules; Anthropic's are the same for what it takes)
PARTS_BY_ROLE: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "tool": frozenset({"text"}),
}


class Thinking(CamelModel):
    """Anthropic's extended thinking."""

    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(None, ge=1024, le=200_000)


class ChatMessage(CamelModel):
    role: Role
    # text, or content parts (text, images, audio, files); None only for an assistant's tool calls
    content: Content = None
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=MAX_TOOLS)
    tool_call_id: StrictStr | None = Field(None, min_length=1, max_length=256)

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any, info: ValidationInfo) -> str | list[ContentPart] | None:
        if value.__class__ is str:
            if len(value) > MAX_CONTENT_CHARS:
                raise ValueError(f"String should have at most {MAX_CONTENT_CHARS} characters")
            text: str = value
            return text
        if value is None:
            if info.data.get("role") != "assistant":  # an assistant's may be None when it calls tools
                raise ValueError("content is required")
            return None
        if not isinstance(value, list):
            raise ValueError("content must be a string or a list of content parts")
        try:
            return _PARTS.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = list(first["loc"])
            if len(loc) > 1 and loc[1] in PART_TYPES:  # the discriminated union's tag, not a field
                del loc[1]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            # pydantic's message for an unknown type quotes it: the error never echoes what was sent
            message = _PART_TYPE_ERROR if first["type"].startswith("union_tag") else first["msg"]
            raise ValueError(f"content{where}: {message}") from None

    def wire(self) -> dict[str, Any]:
        """The message in OpenAI's wire shape, the provider-neutral form a `ProviderCall` carries."""
        content = self.content
        if content.__class__ is str and self.tool_calls is None and self.tool_call_id is None:
            return {"role": self.role, "content": content}  # the plain text path: nothing to convert
        out: dict[str, Any] = {
            "role": self.role,
            "content": [to_wire(p) for p in content] if isinstance(content, list) else content,
        }
        if self.tool_calls is not None:
            out["tool_calls"] = [to_wire(c) for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


# ChatRequest's fields passed to the provider as OpenAI names them (`ChatRequest.provider_options`)
OPENAI_OPTIONS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "n",
        "logprobs",
        "top_logprobs",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "service_tier",
        "reasoning_effort",
        "store",
    }
)
# ... and Anthropic's own, which only Anthropic serves
ANTHROPIC_OPTIONS = frozenset({"top_k", "thinking", "anthropic_beta"})
OPTION_FIELDS = OPENAI_OPTIONS | ANTHROPIC_OPTIONS


class ChatRequest(CamelModel):
    """`POST /api/v1/llm/chat/completions` and `POST /api/v1/llm/jobs`.

    temperature is on OpenAI's 0..2 scale; the Anthropic adapter maps it to 0..1. Tools, content parts,
    response formats and OpenAI's sampling options are OpenAI's, in camelCase (`toolChoice`,
    `responseFormat`, `imageUrl`, `toolCalls`, `toolCallId`).
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
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    service_tier: str | None = Field(None, max_length=32)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    store: StrictBool | None = None
    # Anthropic's own: only Anthropic serves a request with them
    top_k: int | None = Field(None, ge=0, lt=2**31)
    thinking: Thinking | None = None
    anthropic_beta: str | None = Field(None, max_length=512, description="Anthropic's beta features (anthropic-beta)")

    _integral = field_validator("max_tokens", "n", "top_logprobs", "seed", "top_k", mode="before")(integral)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return stops

    @field_validator("messages")
    @classmethod
    def _conversation(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        """Content where it is due, and every tool call answered by `tool` messages right after it
        (what both providers require)."""
        open_calls: set[str] = set()
        for i, m in enumerate(messages):
            if m.role == "tool":
                if m.tool_call_id is None or m.tool_call_id not in open_calls:
                    raise ValueError(
                        f"messages[{i}]: a tool message must answer a tool call of the assistant message"
                        " just before it (by its tool_call_id)"
                    )
                open_calls.discard(m.tool_call_id)
                continue
            if open_calls:
                raise ValueError(f"messages[{i}]: the assistant's tool calls must each be answered by a tool message")
            if m.content is None and not (m.role == "assistant" and m.tool_calls):
                raise ValueError(f"messages[{i}].content is required")
            if m.content.__class__ is list:
                allowed = PARTS_BY_ROLE[m.role]
                for j, part in enumerate(m.content):
                    if part.type not in allowed:
                        raise ValueError(f"messages[{i}].content[{j}]: a {m.role} message takes no {part.type} parts")
            if m.tool_calls is not None:
                if m.role != "assistant":
                    raise ValueError(f"messages[{i}].tool_calls: only an assistant message makes tool calls")
                open_calls = {c.id for c in m.tool_calls}
        return messages

    @model_validator(mode="after")
    def _one_streamed_choice(self) -> ChatRequest:
        """A stream carries one choice and its text: `n` > 1 and `logprobs` cannot stream (refused,
        never dropped)."""
        if self.stream:
            if (self.n or 1) > 1:
                raise ValueError("n > 1 cannot stream: send stream=false, or n=1")
            if self.logprobs:
                raise ValueError("logprobs cannot stream: send stream=false")
        return self

    def provider_options(self) -> dict[str, Any] | None:
        """The OpenAI parameters set on this request, in OpenAI's wire shape (None: none are)."""
        names = self.model_fields_set & OPTION_FIELDS
        if not names:
            return None
        out: dict[str, Any] = {}
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "tools":
                value = [to_wire(t) for t in value]
            elif name == "response_format":
                value = value.wire()
            elif isinstance(value, CamelModel):  # a named tool choice, thinking
                value = to_wire(value)
            out[name] = value
        return out or None


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit


class EmbeddingsRequest(BaseModel):
    """`POST /v1/embeddings` (OpenAI's shape): text to embed, one string or a list of them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: (
        Annotated[StrictStr, Field(min_length=1, max_length=MAX_CONTENT_CHARS)]
        | Annotated[
            list[Annotated[StrictStr, Field(min_length=1, max_length=MAX_CONTENT_CHARS)]],
            Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS),
        ]
    )
    model: str = Field(min_length=1, max_length=128)
    dimensions: int | None = Field(None, ge=1, le=16_384)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = Field(None, max_length=256)
    provider: Literal["openai", "anthropic"] | None = None  # the gateway's own routing hint

    _integral = field_validator("dimensions", mode="before")(integral)

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def options(self) -> dict[str, Any] | None:
        out = {k: v for k, v in (("dimensions", self.dimensions), ("encoding_format", self.encoding_format)) if v}
        return out or None


@dataclass(slots=True)
class ProviderCall:
    """What an adapter is asked to send: provider-neutral, on the gateway's scales.

    `messages` are in OpenAI's chat shape (text content, or content parts; assistant `tool_calls`;
    `tool` messages), and `options` OpenAI's further parameters as the caller set them (`tools`,
    `response_format`, `n`, ...; None on the plain text path). The Anthropic adapter translates both.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    user: str | None = None
    request_id: str | None = None
    stream: bool = False  # ask the provider to stream its answer (the adapter's `stream_parser` reads it)
    options: dict[str, Any] | None = None
    # "embeddings": `messages` are the inputs (one user message each), `options` OpenAI's `dimensions`
    # and `encoding_format`; the answer's vectors come back in `ProviderResult.embeddings`
    endpoint: Literal["chat", "embeddings"] = "chat"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # every prompt token, cached reads and cache writes included
    completion_tokens: int = 0  # reasoning tokens included (billed as output)
    cached_prompt_tokens: int = 0  # read from the provider's prompt cache
    cache_write_tokens: int = 0  # written to Anthropic's prompt cache (billed above the input rate)
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_api(self) -> dict[str, int]:
        out = {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.total_tokens,
        }
        # the details only where there are some: the plain answer keeps its three counts
        if self.cached_prompt_tokens:
            out["cachedTokens"] = self.cached_prompt_tokens
        if self.cache_write_tokens:
            out["cacheWriteTokens"] = self.cache_write_tokens
        if self.reasoning_tokens:
            out["reasoningTokens"] = self.reasoning_tokens
        return out


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


@dataclass(frozen=True, slots=True)
class CalledTool:
    """A tool call in a provider's answer: its id, the function's name and its arguments (JSON text)."""

    id: str
    name: str
    arguments: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class Choice:
    """A further choice of an answer asked for with `n` > 1 (the first one is the result itself)."""

    content: str | None
    finish_reason: FinishReason
    tool_calls: list[CalledTool] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None


@dataclass(slots=True)
class ProviderResult:
    """What an adapter parsed out of a successful provider answer: its first choice, the rest in
    `choices`."""

    content: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    provider_id: str | None = None
    tool_calls: list[CalledTool] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    choices: list[Choice] | None = None
    embeddings: list[list[float] | str] | None = None  # an embeddings answer's vectors (base64 as asked)

    @property
    def has_extras(self) -> bool:
        return bool(self.tool_calls or self.choices) or not (
            self.refusal is None and self.logprobs is None and self.embeddings is None
        )

    def answer_extras(self) -> dict[str, Any]:
        """The stored answer's fields beyond the plain text one's (camelCase, only those present)."""
        out: dict[str, Any] = {}
        if self.embeddings is not None:
            out["embeddings"] = self.embeddings
        if self.tool_calls:
            out["toolCalls"] = [c.to_wire() for c in self.tool_calls]
        if self.refusal is not None:
            out["refusal"] = self.refusal
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        if self.choices:
            out["choices"] = [
                {
                    "index": i,
                    "content": c.content,
                    "finishReason": c.finish_reason,
                    **({"toolCalls": [t.to_wire() for t in c.tool_calls]} if c.tool_calls else {}),
                    **({"refusal": c.refusal} if c.refusal is not None else {}),
                    **({"logprobs": c.logprobs} if c.logprobs is not None else {}),
                }
                for i, c in enumerate(self.choices, start=1)
            ]
        return out


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
