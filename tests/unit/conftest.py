"""Unit-test fixtures: one Redis server of the tests' own (Lua scripts need a real one), flushed per test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.types import ASGIApp

from devstack.procs import ProcGroup, start_redis
from plumbing.http_server import OneWriteHttpToolsProtocol
from plumbing.redis_connection import connect
from plumbing.round_trip import RoundTrip


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    group = ProcGroup()
    try:
        _, url = start_redis(group)
        yield url
    finally:
        group.stop_all()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[Redis]:
    """A client of that server, on an empty database, connected as the gateway connects."""
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every RoundTrip sent during the test."""
    sizes: list[int] = []
    real = RoundTrip.send

    async def counting(self: RoundTrip) -> list[object]:
        sizes.append(len(self))
        return await real(self)

    monkeypatch.setattr(RoundTrip, "send", counting)
    return sizes


@pytest.fixture
def serve_asgi() -> Callable[[ASGIApp], AbstractAsyncContextManager[str]]:
    """Serves an ASGI app over real HTTP as the API and the simulator do (uvicorn, httptools, head
    and body in one write): `async with serve_asgi(app) as base_url`."""
    return _serving


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _serving(app: ASGIApp) -> AsyncIterator[str]:
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=OneWriteHttpToolsProtocol, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
