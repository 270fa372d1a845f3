"""Admin-only operations: `POST /api/v1/llm/test` sends a short message to each enabled provider;
`POST /api/v1/llm/cache/clear` empties the response cache.

Each test is a real request through the queue and a worker (limits, breakers, retries and all), with
failover off so that a provider that fails is reported as failing rather than hidden by the other one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Request
from pydantic import Field
from starlette.responses import Response

from api.auth import Principal, authenticator_of, require_admin
from api.openapi_docs import GATEWAY_ERRORS, CacheClearedDoc, ProviderTestDoc, ok
from api.outcomes import json_response, outcome_error
from api.state import AppState, get_state
from shared.admission import build_payload
from shared.errors import ErrorType, GatewayError
from shared.routing import PROVIDERS
from shared.schemas import CamelModel, ChatMessage, ChatRequest

router = APIRouter(prefix="/api/v1/llm", tags=["admin"], responses=GATEWAY_ERRORS)

TEST_PROMPT = "This is a connectivity test. Reply with the single word: ok"
TEST_MAX_TOKENS = 16
DEFAULT_TEST_TIMEOUT_S = 30.0


class ProviderTestRequest(CamelModel):
    providers: list[Literal["openai", "anthropic"]] | None = Field(
        None, min_length=1, description="default: every provider with an API key configured"
    )
    timeout: float | None = Field(None, gt=0, le=120, description="seconds to wait for each provider")


@router.post(
    "/test", summary="Send a short test message to each enabled provider (admin only)", responses=ok(ProviderTestDoc)
)
async def test_providers(
    request: Request,
    body: ProviderTestRequest | None = Body(None),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(require_admin),
) -> Response:
    secrets = authenticator_of(request.app).secrets
    providers: list[str] = list(dict.fromkeys(body.providers)) if body and body.providers else []
    if not providers:
        providers = [p for p in PROVIDERS if secrets.api_keys(p)]
    if not providers:
        raise GatewayError(ErrorType.INVALID_REQUEST, "no provider is enabled: no API key is configured")
    timeout = (body.timeout if body else None) or min(state.settings.request_timeout_s, DEFAULT_TEST_TIMEOUT_S)
    reports = await asyncio.gather(*(_test_one(state, p, timeout, principal) for p in providers))
    data = {"ok": all(r["ok"] for r in reports), "providers": dict(zip(providers, reports, strict=True))}
    return json_response(orjson.dumps({"success": True, "data": data}))


async def _test_one(state: AppState, provider: str, timeout: float, principal: Principal) -> dict[str, Any]:
    req = ChatRequest.model_validate(
        {
            "messages": [ChatMessage(role="user", content=TEST_PROMPT)],
            "provider": provider,
            "max_tokens": TEST_MAX_TOKENS,
            "temperature": 0.0,
            "cache": False,
        }
    )
    payload = build_payload(req, state.settings, kind="sync", tenant=principal.subject)
    payload.failover = False
    payload.cache_key = None  # a test must reach the provider, never a cached answer
    rid = payload.request_id
    started = time.perf_counter()
    state.waiter.expect(rid)
    try:
        await state.queue.enqueue(payload, reply=state.waiter.channel)
    except BaseException:
        state.waiter.forget(rid)
        raise
    outcome = await state.waiter.wait(rid, timeout)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    report: dict[str, Any] = {"ok": False, "model": payload.call.model, "latencyMs": latency_ms, "error": None}
    if outcome is None:
        err = GatewayError(ErrorType.TIMEOUT, f"no answer within {timeout:g}s", retryable=True, provider=provider)
        report["error"] = err.to_dict()
    elif outcome.status == "succeeded":
        result = outcome.json()
        report.update(ok=True, model=result.get("model") or payload.call.model)
    else:
        report["error"] = outcome_error(outcome).to_dict()
    report["requestId"] = rid
    return report


@router.post("/cache/clear", summary="Empty the response cache (admin only)", responses=ok(CacheClearedDoc))
async def clear_cache(state: AppState = Depends(get_state), _: Principal = Depends(require_admin)) -> Response:
    removed = await state.cache.clear()
    return json_response(orjson.dumps({"success": True, "data": {"cleared": removed}}))
