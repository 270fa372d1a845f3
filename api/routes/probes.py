"""Liveness and readiness probes for orchestrators (open: they reveal nothing)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from api.openapi_docs import GATEWAY_ERRORS, ProbeDoc
from api.outcomes import json_response
from api.state import AppState, get_state

router = APIRouter(tags=["probes"])


@router.get("/livez", summary="The process is up", responses={200: {"model": ProbeDoc}})
async def livez() -> Response:
    return json_response(b'{"status":"ok"}')


@router.get(
    "/readyz", summary="The process can reach Redis", responses={200: {"model": ProbeDoc}, "5XX": GATEWAY_ERRORS["5XX"]}
)
async def readyz(state: AppState = Depends(get_state)) -> Response:
    await state.redis.ping()
    return json_response(b'{"status":"ready"}')
