"""Unit-test fixtures: one Redis server of the tests' own (Lua scripts need a real one), flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from devstack.procs import ProcGroup, start_redis
from shared.redis_conn import connect
from shared.round_trip import RoundTrip


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
