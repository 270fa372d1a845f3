"""What the routes take and answer, as the OpenAPI schema documents it.

The routes write pre-encoded JSON (no response_model validation on the hot path), so without these
models FastAPI would document every answer as "anything" and every error as its own HTTPValidationError
shape, which the gateway never sends. Each route names its success model with `responses=`; each router
declares the error answers of its family (`GATEWAY_ERRORS` on /api/v1/llm, `OPENAI_ERRORS` on /v1).
Fields that are always present are required; the answers may carry more (additional properties allowed).
The routes that read their body themselves (the OpenAI-compatible chat, batch uploads) document it
with `openapi_extra=request_body(...)`, saying exactly what they accept.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from pydantic.alias_generators import to_camel

from shared.camel import inline_defs
from shared.chat_parts import (
    MAX_TOOLS,
    ContentPart,
    FunctionDef,
    NamedFunction,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from shared.errors import ErrorType
from shared.schemas import MAX_CHOICES, ChatRequest, FinishReason, StopList

T = TypeVar("T")


class Doc(BaseModel):
    """camelCase on the wire (serialization aliases), extra fields allowed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ErrorDetail(Doc):
    type: ErrorType
    message: str
    param: str | None
    retryable: bool
    provider: str | None = None
    retry_after: float | None = None


class ErrorEnvelope(Doc):
    """Every error answer on /api/v1/llm (a sync request that failed also names `jobId` and `attempts`)."""

    success: Literal[False]
    error: ErrorDetail


class Envelope(Doc, Generic[T]):
    success: Literal[True]
    data: T


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(BaseModel):
    """OpenAI's error shape, on every error answer under /v1."""

    error: OpenAIErrorDetail


STREAM_DOC = """With `"stream": true` the answer is `text/event-stream` (Server-Sent Events), once the first
delta is ready (an error before it is the same JSON error as without `stream`). Every event has an `id:`
(1, 2, ...). Events:

- `delta`: `{"content": "..."}`, a piece of the answer (or `{"toolCall": {index, id, name, arguments}}`);
- `done`: the whole answer exactly as without `stream` (`content`, `usage`, `cost`, `latencyMs`,
  `attempts`, `cached`): the last event of a complete stream;
- `error`: `{"success": false, "error": {type, message, ..., attempts}}`: the last event of a stream
  that could not be completed (a provider failing after the first delta, a timeout between deltas, the
  stream cancelled). A stream that ends without `done` is incomplete.

The `X-Gateway-Request-Id` header names the request: after a lost connection,
`GET /api/v1/llm/jobs/{id}/stream` with `Last-Event-ID` continues with exactly the events after it,
without a second provider call. A client that goes away and does not come back within
`STREAM_ABANDON_GRACE_S` has its upstream call stopped (the request ends `cancelled`)."""

JOB_STREAM_DOC = """Any request's answer as Server-Sent Events, whenever the client connects: before, during
or after its provider call; an async job submitted with `"stream": true` streams delta by delta, any
other request gives its whole answer as one `delta`, then `done`. The events are those of
`POST /api/v1/llm/chat/completions` with `stream` (`format=openai`: OpenAI's chunks). With
`Last-Event-ID`, exactly the events after that id (no second provider call); 204 when there are none
left, 400 when the id is beyond the stream's end, 410 when the events after it are no longer kept
(`STREAM_MAX_EVENTS`). Another tenant's request answers 404, as an unknown one."""

# A chat route answers `stream: true` with Server-Sent Events: its 200 has this content type too.
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": "one Server-Sent Event (see the route's description)",
            "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
        }
    }
}

GATEWAY_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorEnvelope, "description": "The request was refused (the error says why)"},
    "5XX": {"model": ErrorEnvelope, "description": "The gateway or its providers could not answer"},
}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIErrorEnvelope, "description": "The request was refused, in OpenAI's error shape"},
    "5XX": {"model": OpenAIErrorEnvelope, "description": "The gateway or its providers could not answer"},
}

# For a route whose own answers are not JSON (Prometheus text): its errors still are, which `model`
# would document in the route's media type. ErrorEnvelope is in the schema's components through the
# other routes' GATEWAY_ERRORS.
GATEWAY_ERRORS_OF_TEXT_ROUTE: dict[int | str, dict[str, Any]] = {
    status: {
        "description": entry["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for status, entry in GATEWAY_ERRORS.items()
}


def ok(model: Any, status: int = 200, description: str = "Success") -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route whose success answer is `{"success": true, "data": <model>}`."""
    return {status: {"model": Envelope[model], "description": description}}


# --- completions and jobs


class UsageDoc(Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None = Field(None, description="prompt tokens read from the provider's cache")
    cache_write_tokens: int | None = Field(None, description="prompt tokens written to Anthropic's cache")
    reasoning_tokens: int | None = Field(None, description="completion tokens the model reasoned with")


class CostDoc(Doc):
    prompt_cost: float
    completion_cost: float
    total_cost: float
    currency: str


class AttemptDoc(Doc):
    provider: str
    model: str
    error: dict[str, Any] | None
    latency_ms: float | None = None


class ChatResult(Doc):
    id: str
    object: Literal["chat.completion"]
    created: int
    provider: str
    model: str
    content: str
    finish_reason: FinishReason
    usage: UsageDoc
    cost: CostDoc | None
    latency_ms: float | None
    attempts: list[AttemptDoc]
    cached: bool
    tool_calls: list[OpenAIToolCallDoc] | None = Field(None, description="the calls of the tools the model made")
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = Field(None, description="the further choices asked for with `n`")


class JobAccepted(Doc):
    id: str
    status: Literal["queued"]
    provider: str
    model: str
    status_url: str


class JobView(Doc):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    provider: str | None
    model: str | None
    created_at: int | None
    started_at: int | None
    finished_at: int | None
    result: ChatResult | None
    error: ErrorDetail | None


class JobCancelled(Doc):
    id: str
    status: Literal["cancelled"]


# --- health, status, metrics, alerts, logs, admin


class BreakerDoc(Doc):
    state: Literal["closed", "open", "half_open"]
    open_until: int | None


class ProviderHealthDoc(Doc):
    status: Literal["healthy", "degraded", "unhealthy"]
    latency: int | None
    success_rate: float
    error_rate: float
    score: float
    requests: int
    consecutive_failures: int
    breaker: BreakerDoc
    probe: dict[str, Any] | None
    reasons: list[str]


class HealthDoc(Doc):
    overall: Literal["healthy", "degraded", "unhealthy"]
    providers: dict[str, ProviderHealthDoc]


class RedisStatusDoc(Doc):
    reachable: bool
    latency_ms: float | None


class QueueStatusDoc(Doc):
    queue_depth: int | None
    workers: int | None


class StatusDoc(Doc):
    version: str
    uptime: float
    started_at: int
    primary_provider: str
    failover: bool
    redis: RedisStatusDoc
    providers: dict[str, QueueStatusDoc]
    health_monitor: dict[str, Any]
    routing: dict[str, Any]


class GatewayFigures(Doc):
    total_requests: int
    successful_requests: int
    failed_requests: int
    average_latency: float | None
    total_cost: float
    uptime: int


class ModelFigures(Doc):
    model: str
    count: int
    avg_latency: float | None


class PerformanceFigures(Doc):
    provider: str | None
    total_requests: int
    average_latency: float | None
    p95_latency: float | None
    total_cost: float
    top_models: list[ModelFigures]


class MetricsDoc(Doc):
    tenant: str | None = Field(
        description="whose requests the figures count: the caller's own, or null for every tenant's"
    )
    gateway: GatewayFigures
    performance: PerformanceFigures


class AlertsDoc(Doc):
    active: list[dict[str, Any]]
    degraded_providers: list[str]
    recent: list[dict[str, Any]]


class LogsDoc(Doc):
    logs: list[dict[str, Any]] = Field(description="PII-masked entries, oldest first")
    count: int
    next_cursor: str | None


class ProviderTestReport(Doc):
    ok: bool
    model: str
    latency_ms: float
    error: ErrorDetail | None
    request_id: str


class ProviderTestDoc(Doc):
    ok: bool
    providers: dict[str, ProviderTestReport]


class CacheClearedDoc(Doc):
    cleared: int


# --- batches


class RequestCountsDoc(Doc):
    total: int
    completed: int
    failed: int


class BatchCostDoc(Doc):
    total_cost: float
    currency: str


class BatchDoc(Doc):
    id: str
    object: Literal["batch"]
    status: Literal[
        "validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "cancelled", "expired"
    ]
    format: Literal["openai", "gateway"] | None
    completion_window: str
    request_counts: RequestCountsDoc
    cost: BatchCostDoc
    created_at: int | None
    in_progress_at: int | None
    expires_at: int | None
    cancelling_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    cancelled_at: int | None
    expired_at: int | None
    failed_at: int | None
    metadata: dict[str, Any] | None
    results_url: str


# --- probes and the OpenAI-compatible routes


class ProbeDoc(BaseModel):
    status: Literal["ok", "ready"]


class OpenAIFunctionCallDoc(BaseModel):
    name: str
    arguments: str


class OpenAIToolCallDoc(BaseModel):
    id: str
    type: Literal["function"]
    function: OpenAIFunctionCallDoc


class OpenAIMessageDoc(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[OpenAIToolCallDoc] | None = None
    function_call: OpenAIFunctionCallDoc | None = Field(None, description="for a caller using the legacy `functions`")


class OpenAIChoiceDoc(BaseModel):
    index: int
    message: OpenAIMessageDoc
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length", "content_filter", "tool_calls", "function_call"]


class OpenAIPromptDetailsDoc(BaseModel):
    cached_tokens: int


class OpenAICompletionDetailsDoc(BaseModel):
    reasoning_tokens: int


class OpenAIUsageDoc(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: OpenAIPromptDetailsDoc | None = None
    completion_tokens_details: OpenAICompletionDetailsDoc | None = None


class OpenAIChatCompletionDoc(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[OpenAIChoiceDoc]
    usage: OpenAIUsageDoc
    system_fingerprint: str | None


class OpenAIEmbeddingDoc(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32 as asked")


class OpenAIEmbeddingsUsageDoc(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsDoc(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbeddingDoc]
    model: str
    usage: OpenAIEmbeddingsUsageDoc


class OpenAIModelDoc(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelListDoc(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModelDoc]


# --- request bodies the routes read themselves


def inline_schema(model: type[BaseModel], by_alias: bool = True) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, to embed in a route's `openapi_extra`."""
    return inline_defs(model.model_json_schema(by_alias=by_alias))


def request_body(content: dict[str, dict[str, Any]], description: str) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its body itself: media type -> JSON schema."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media: {"schema": schema} for media, schema in content.items()},
        }
    }


class OpenAIMessageInDoc(BaseModel):
    """A message as OpenAI takes it (parts and tools in OpenAI's snake_case shapes)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[StrictStr, Field(max_length=2_000_000)] | list[ContentPart] | None
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, min_length=1, max_length=256)


class OpenAIChatRequestDoc(BaseModel):
    """What `POST /v1/chat/completions` accepts: OpenAI's body. Tool messages answering an assistant's
    `tool_calls`, and the legacy `functions`, are accepted too; `stream: true` answers OpenAI's
    `chat.completion.chunk` events (one choice: not with `n` > 1 nor `logprobs`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    messages: list[OpenAIMessageInDoc] = Field(min_length=1, max_length=2048)
    max_tokens: int | None = Field(None, gt=0, le=200_000)
    max_completion_tokens: int | None = Field(None, gt=0, le=200_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: StopList | StrictStr | None = None
    user: str | None = Field(None, max_length=256)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = Field(None, description="only with stream: true")
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    # any 64-bit integer is taken; the document shows the range a JSON number holds exactly
    seed: int | None = Field(None, ge=-(2**53), le=2**53)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    service_tier: str | None = Field(None, max_length=32)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    parallel_tool_calls: bool | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    functions: list[FunctionDef] | None = Field(None, max_length=MAX_TOOLS, description="legacy: `tools` instead")
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    provider: Literal["openai", "anthropic"] | None = None


def openai_schema(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAI-shaped doc model's schema: its parts and tools by their snake_case names, as OpenAI
    writes them (the response format's `schema` is the one field named apart from its attribute)."""
    schema = inline_schema(model, by_alias=False)

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {("schema" if k == "schema_" else k): rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    renamed: dict[str, Any] = rename(schema)
    return renamed


class BatchItemDoc(ChatRequest):
    """One item of a JSON-array batch: a chat request body with the caller's `customId`
    (unique within the batch)."""

    custom_id: str = Field(min_length=1, max_length=512)
    model: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\t]+$")  # no tab in a batch


class OpenAIBatchBodyDoc(OpenAIChatRequestDoc):
    model: str = Field(min_length=1, max_length=128, pattern=r"^[^\t]+$")  # a batch item's model has no tab


class OpenAIBatchLineDoc(BaseModel):
    """One line of an OpenAI Batch-format upload."""

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions", "/chat/completions"] = "/v1/chat/completions"
    body: OpenAIBatchBodyDoc


class GatewayBatchDoc(BaseModel):
    items: list[BatchItemDoc] = Field(min_length=1)


class OpenAIBatchDoc(BaseModel):
    items: list[OpenAIBatchLineDoc] = Field(min_length=1)


def batch_upload_schema() -> dict[str, Any]:
    """A batch is one format throughout: SPEC bodies with `customId`, or OpenAI Batch lines. As JSON
    Lines, each array item is one line of the upload."""
    gateway, openai = inline_schema(GatewayBatchDoc), openai_schema(OpenAIBatchDoc)
    return {"anyOf": [gateway["properties"]["items"], openai["properties"]["items"]]}
