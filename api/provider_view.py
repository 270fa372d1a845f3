"""The API's picture of which providers to route around, with no Redis round trip per request.

Each API process keeps one `ProviderStatusView` (breakers and the monitor's probe verdicts, pushed by
pub/sub and re-read periodically). It runs for the app's lifetime through the health router's
lifespan, which FastAPI nests inside the app's own (so the Redis pool already exists).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from api.state import AppState
from shared.health import ProviderStatusView
from shared.queue import now_ms
from shared.routing import PROVIDERS

START_WAIT_S = 2.0


@asynccontextmanager
async def provider_view_lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.gateway
    view = ProviderStatusView(state.redis, state.settings, PROVIDERS)
    view.start()
    app.state.provider_view = view
    # best effort: with Redis down the API still starts, routing to the configured primary
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(START_WAIT_S):
            await view.ready.wait()
    try:
        yield
    finally:
        await view.stop()


def view_of(app: FastAPI) -> ProviderStatusView | None:
    view: ProviderStatusView | None = getattr(app.state, "provider_view", None)
    return view


async def unavailable_providers(request: Request) -> frozenset[str]:
    """The dependency routes pass to `build_payload(..., unavailable=...)`."""
    view = view_of(request.app)
    return view.unavailable(now_ms()) if view is not None else frozenset()
