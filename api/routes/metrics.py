"""SPEC.md's metrics, the alerts (read from Redis), and the admin-only request logs (from Redis or the log
store, shared/log_store.py).

A user's metrics count its own tenant's requests only; an admin's count every tenant's, or one's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from api.auth import Principal, current_principal, require_admin
from api.openapi_docs import GATEWAY_ERRORS, AlertsDoc, LogsDoc, MetricsDoc, ok
from api.outcomes import json_response
from api.state import AppState, get_state
from shared.alerts import AlertEngine, active_alerts, alert_history
from shared.errors import ErrorType, GatewayError
from shared.metrics import period_summary
from shared.request_log import MAX_READ, LogReader

router = APIRouter(prefix="/api/v1/llm", tags=["observability"], responses=GATEWAY_ERRORS)

Provider = Literal["openai", "anthropic"]


def _ok(data: object) -> Response:
    return json_response(orjson.dumps({"success": True, "data": data}))


@router.get("/metrics", summary="Requests, latency and cost over the last hour, day or week", responses=ok(MetricsDoc))
async def get_metrics(
    provider: Provider | None = Query(None, description="the provider whose performance to show (default: all)"),
    period: Literal["hour", "day", "week"] = Query("day"),
    tenant: str | None = Query(
        None, max_length=256, description="admins: one tenant's figures (default: every tenant's); users see their own"
    ),
    state: AppState = Depends(get_state),
    principal: Principal = Depends(current_principal),
) -> Response:
    # a user's figures are its own tenant's: others' volumes and spend are theirs to know
    scope = principal.tenant_scope
    if scope is not None and tenant not in (None, scope):
        raise GatewayError(ErrorType.PERMISSION, "a user token shows only its own tenant's metrics", param="tenant")
    shown = scope if scope is not None else tenant
    uptime = time.time() - state.started
    summary = await period_summary(state.redis, period, provider, uptime, tenant=shown)
    return _ok({"tenant": shown, **summary})


def _alert_engine(request: Request, state: AppState) -> AlertEngine:
    engine: AlertEngine | None = getattr(request.app.state, "alert_engine", None)
    if engine is None:
        engine = AlertEngine.from_settings(state.redis, state.settings)
        request.app.state.alert_engine = engine
    return engine


@router.get("/alerts", summary="Alerts in progress and the latest raise/clear events", responses=ok(AlertsDoc))
async def get_alerts(
    request: Request,
    limit: int = Query(50, ge=1, le=1000, description="how many recent events to list"),
    state: AppState = Depends(get_state),
    _: Principal = Depends(current_principal),
) -> Response:
    engine = _alert_engine(request, state)
    if state.settings.observability_enabled and engine.due():
        await engine.evaluate()  # so an episode that ended without traffic is seen to end
    active = await active_alerts(state.redis)
    recent = await alert_history(state.redis, limit)
    degraded = sorted({a["provider"] for a in active if a["type"] == "error_rate"})
    return _ok({"active": active, "degradedProviders": degraded, "recent": recent})


# Log entries are stream ids: milliseconds in 0..2**64-1. A time outside is clamped to the range (no entry
# lies beyond it); sent as is, Redis would refuse the id and the caller would read "Redis unreachable".
MAX_STREAM_MS = 2**64 - 1
TIME_DOC = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": "^[0-9]*$"},
    ],
    "description": "ISO 8601 or epoch ms (empty: no bound)",
}


def _time_ms(value: str | None, param: str) -> int | None:
    """ISO 8601 (naive means UTC) or epoch milliseconds."""
    if value is None or value == "":
        return None
    if value.isascii() and value.isdigit():
        return min(int(value), MAX_STREAM_MS)
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        raise GatewayError(
            ErrorType.INVALID_REQUEST, f"{param} must be ISO 8601 (2024-01-01T00:00:00Z) or epoch ms", param=param
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return min(max(int(parsed.timestamp() * 1000), 0), MAX_STREAM_MS)


@router.get("/logs", summary="PII-masked request, response and error logs (admin only)", responses=ok(LogsDoc))
async def get_logs(
    request: Request,
    start_time: str | None = Query(None, alias="startTime", json_schema_extra=TIME_DOC),
    end_time: str | None = Query(None, alias="endTime", json_schema_extra=TIME_DOC),
    type: Literal["request", "response", "error"] | None = Query(None),
    provider: Provider | None = Query(None),
    limit: int = Query(100, ge=1, le=MAX_READ),
    cursor: str | None = Query(
        None, pattern=r"^[0-9]{1,19}-[0-9]{1,19}$", description="nextCursor of the previous page (a stream id)"
    ),
    state: AppState = Depends(get_state),
    _: Principal = Depends(require_admin),
) -> Response:
    start_ms, end_ms = _time_ms(start_time, "startTime"), _time_ms(end_time, "endTime")
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise GatewayError(ErrorType.INVALID_REQUEST, "endTime is before startTime", param="endTime")
    logs: LogReader = request.app.state.log_reader
    page = await logs.read(start_ms=start_ms, end_ms=end_ms, kind=type, provider=provider, limit=limit, cursor=cursor)
    return _ok({"logs": page.entries, "count": len(page.entries), "nextCursor": page.next_cursor})
