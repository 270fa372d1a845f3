"""Turning a validated request into a queue job: choose provider and model, stamp ids and times."""

from __future__ import annotations

import uuid
from typing import Literal

from shared.queue import now_ms
from shared.routing import choose
from shared.schemas import ChatRequest, JobPayload, ProviderCall
from shared.settings import Settings


def new_request_id() -> str:
    return uuid.uuid4().hex


def build_payload(
    req: ChatRequest,
    settings: Settings,
    *,
    kind: Literal["sync", "async", "batch"],
    tenant: str | None = None,
    unavailable: frozenset[str] = frozenset(),
    request_id: str | None = None,
) -> JobPayload:
    rid = request_id or new_request_id()
    call = ProviderCall(
        model="",  # chosen below, knowing what the call needs
        messages=[m.wire() for m in req.messages],
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop if isinstance(req.stop, list) else None,
        user=req.user,
        request_id=rid,
        options=req.provider_options(),
    )
    provider, call.model = choose(req.provider, req.model, settings, unavailable, call)
    return JobPayload(request_id=rid, provider=provider, call=call, created_ms=now_ms(), tenant=tenant, kind=kind)
