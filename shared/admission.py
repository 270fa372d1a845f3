"""Turning a validated request into a queue job: choose provider and model, stamp ids and times."""

from __future__ import annotations

import uuid
from typing import Literal

from shared.queue import now_ms
from shared.routing import choose
from shared.schemas import ChatRequest, EmbeddingsRequest, JobPayload, ProviderCall
from shared.settings import Settings


def new_request_id() -> str:
    return uuid.uuid4().hex


def build_payload(
    req: ChatRequest | EmbeddingsRequest,
    settings: Settings,
    *,
    kind: Literal["sync", "async", "batch"],
    tenant: str | None = None,
    unavailable: frozenset[str] = frozenset(),
    request_id: str | None = None,
) -> JobPayload:
    rid = request_id or new_request_id()
    call = embeddings_call(req, rid) if isinstance(req, EmbeddingsRequest) else chat_call(req, rid)
    call.stream = call.stream and kind != "batch"  # a batch's results are fetched whole
    provider, call.model = choose(req.provider, req.model, settings, unavailable, call)
    return JobPayload(request_id=rid, provider=provider, call=call, created_ms=now_ms(), tenant=tenant, kind=kind)


def chat_call(req: ChatRequest, rid: str) -> ProviderCall:
    return ProviderCall(
        model="",  # chosen by the caller, knowing what the call needs
        messages=[m.wire() for m in req.messages],
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop if isinstance(req.stop, list) else None,
        user=req.user,
        request_id=rid,
        stream=bool(req.stream),
        options=req.provider_options(),
    )


def embeddings_call(req: EmbeddingsRequest, rid: str) -> ProviderCall:
    """The inputs as user messages (what limits, logs and the adapter read)."""
    return ProviderCall(
        model="",
        messages=[{"role": "user", "content": text} for text in req.inputs()],
        user=req.user,
        request_id=rid,
        options=req.options(),
        endpoint="embeddings",
    )
