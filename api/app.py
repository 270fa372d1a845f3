"""The API app factory: one Redis pool, one queue, one outcome subscriber per process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from api.auth import install_auth
from api.chat_fast_path import OPENAI_CHAT_PATH, SPEC_CHAT_PATH, chat_routes
from api.console import pages as console_pages
from api.correlation import CorrelationMiddleware
from api.errors import error_response, install_error_handlers
from api.refusals import RefusalCounter
from api.response_cache import ResponseCache
from api.route_warmup import warm_routes
from api.routes import admin as admin_routes
from api.routes import anthropic_compat as anthropic_routes
from api.routes import batches as batch_routes
from api.routes import completions, console_data, jobs, probes, prometheus
from api.routes import health as health_routes
from api.routes import metrics as metrics_routes
from api.routes import openai_compat as openai_routes
from api.shedding import ShedMiddleware
from api.state import AppState
from api.stream_hub import StreamHub
from plumbing.redis_connection import connect
from plumbing.redis_lane import RedisLane
from shared import __version__
from shared.batches import BatchStore
from shared.durability import check_redis, replica_wait
from shared.errors import ErrorType, GatewayError
from shared.log_store import PgLogStore, log_reader
from shared.logging_setup import configure_logging
from shared.queue import RequestQueue
from shared.routing import PROVIDERS
from shared.settings import Settings, get_settings
from shared.streams import Streams
from shared.waiter import Waiter

OPENAI_EMBEDDINGS_PATH = "/v1/embeddings"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(settings.redis_address(), max_connections=500)
        instance = uuid.uuid4().hex
        hub = StreamHub(redis, instance)
        waiter = Waiter(redis, instance, listener=hub)
        lane = RedisLane(redis)  # new requests' admissions: the hot path's one command
        app.state.gateway = AppState(
            settings=settings,
            redis=redis,
            queue=RequestQueue.from_settings(redis, settings, admissions=lane),
            waiter=waiter,
            cache=ResponseCache(redis, settings),
            hub=hub,
            streams=Streams(
                redis, watch_ttl_s=int(settings.max_request_timeout_s) + 60, record_ttl_s=settings.result_ttl_s
            ),
        )
        app.state.batches = BatchStore(
            redis, PROVIDERS, result_ttl_s=settings.result_ttl_s, confirm=replica_wait(settings)
        )
        app.state.log_reader = log_reader(redis, settings)
        await warm_routes(app.router)
        # what an acknowledgement survives, said once per process (REDIS_DURABILITY); best effort
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await check_redis(redis, settings.redis_durability, apply=settings.redis_durability_apply)
        await waiter.start()
        app.state.refusals.start(redis)
        try:
            yield
        finally:
            await app.state.refusals.stop(redis)
            await waiter.stop()
            await hub.aclose()
            if isinstance(app.state.log_reader, PgLogStore):
                await app.state.log_reader.aclose()
            await lane.aclose()
            await redis.aclose()

    app = FastAPI(
        title="LLM Gateway",
        version=__version__,
        lifespan=lifespan,
        description="One queue-backed gateway to OpenAI and Anthropic.",
    )
    install_error_handlers(app)
    install_auth(app, settings)
    app.state.refusals = RefusalCounter(enabled=settings.observability_enabled)

    async def redis_down(_: Request, exc: Exception) -> Response:
        err = GatewayError(
            ErrorType.SERVICE_UNAVAILABLE,
            f"the gateway's Redis is unreachable ({type(exc).__name__}); retry shortly",
            retry_after=1,
        )
        return error_response(err)

    app.add_exception_handler(RedisError, redis_down)
    app.add_exception_handler(OSError, redis_down)
    app.include_router(probes.router)
    app.include_router(completions.router)
    app.include_router(jobs.router)
    app.include_router(health_routes.router)  # its lifespan keeps the routing view of provider health
    app.include_router(admin_routes.router)
    app.include_router(metrics_routes.router)
    app.include_router(prometheus.build_router(public=settings.metrics_public))
    app.include_router(batch_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(console_data.router)
    app.include_router(console_pages.router)
    app.include_router(anthropic_routes.router)
    app.router.routes[0:0] = chat_routes()  # matched first: the chat paths skip FastAPI's request handling
    # batch uploads are streamed, so they may be larger than any other body
    app.add_middleware(
        batch_routes.UploadBodyLimit, max_bytes=settings.max_body_bytes, batch_max_bytes=settings.batch_max_body_bytes
    )
    if settings.api_max_in_flight is not None or settings.api_max_loop_lag_ms is not None:
        # overload: refuse at once what cannot be served in time
        app.add_middleware(
            ShedMiddleware,
            max_in_flight=settings.api_max_in_flight,
            max_lag_ms=settings.api_max_loop_lag_ms,
            paths=frozenset(
                {SPEC_CHAT_PATH, OPENAI_CHAT_PATH, OPENAI_EMBEDDINGS_PATH, jobs.router.prefix, batch_routes.PREFIX}
            ),
            openai_prefix=openai_routes.PREFIX + "/",
        )
    app.add_middleware(CorrelationMiddleware)  # outermost: every answer, even a refusal, carries the id
    anthropic_routes.install_anthropic_errors(app)  # before OpenAI's, which leaves Anthropic-shaped ones
    openai_routes.install_openai_errors(app)  # last: wraps every handler registered above
    return app


def create_default_app() -> FastAPI:
    """The entry point servers import (`api.app:create_default_app`, factory mode)."""
    configure_logging("api")
    return create_app()
