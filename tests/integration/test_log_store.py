"""The log store against a real PostgreSQL (a fresh database for this session, dropped after): requests'
logs land there two per request, `/logs` reads give what the Redis stream gives, retention drops whole
daily partitions, and the writer rides out the database being away without losing what the buffer holds
(the buffer's cap drops, and counts, what it cannot hold)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from devstack.postgres import fresh_database, postgres_server, set_connections_allowed
from devstack.procs import ProcGroup, start_redis
from devstack.stack import Stack
from plumbing.redis_connection import connect
from shared import keys
from shared.log_store import DAY_MS, PARTITIONS, SCHEMA, LogRow, PgLogStore
from shared.request_log import RequestLog
from shared.settings import Settings
from tests.integration.conftest import dump_logs, start_stack, user_chat
from workers.log_keeper import LogKeeper

RETENTION_DAYS = 30
NOW = 1_790_000_000_000  # a fixed "now" for the in-process tests (2026-09-21)


@pytest.fixture(scope="module")
def pg_port() -> Iterator[int]:
    with postgres_server() as port:
        yield port


@pytest.fixture(scope="module")
def pg_url(pg_port: int) -> Iterator[str]:
    with fresh_database(pg_port, "gateway_logs") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    group = ProcGroup()
    try:
        yield start_redis(group)[1]
    finally:
        group.stop_all()


def db_url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture
async def buffer(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(db_url(redis_url, 1))
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PgLogStore]:
    s = PgLogStore(pg_url, retention_s=RETENTION_DAYS * 86400)
    pool = await s.pool()
    async with pool.acquire() as conn:
        await conn.execute(f"DROP TABLE request_logs; {SCHEMA}")  # its partitions too
    yield s
    await s.aclose()


def settings(**overrides: Any) -> Settings:
    return Settings(log_retention_days=RETENTION_DAYS, log_writer_batch=250, **overrides)


def entry(i: int) -> dict[str, Any]:
    kind = ("request", "response", "error")[i % 3]
    return {"type": kind, "provider": ("openai", "anthropic")[i % 2], "requestId": f"r{i}", "n": i, "x": 1.0}


async def write_entries(log: RequestLog, count: int, start_ms: int, step_ms: int = 7) -> None:
    # several entries share a millisecond (ids ms-0, ms-1, ...) so that paging must follow the sequence too
    for i in range(count):
        await log.write(entry(i), now_ms=start_ms + (i // 3) * step_ms)


def keeper(redis: Redis, store: PgLogStore | None, **overrides: Any) -> LogKeeper:
    return LogKeeper(redis, settings(**overrides), "test", store)


# --- the whole stack: each request's two logs reach the store


@pytest.fixture(scope="module")
def stack_pg_url(pg_port: int) -> Iterator[str]:
    """The stack's own database: its keeper drops partitions past the retention by the real clock, which
    would take the other tests' rows (stamped at NOW) away under them."""
    with fresh_database(pg_port, "gateway_stack_logs") as url:
        yield url


@pytest.fixture(scope="module")
def pg_stack(stack_pg_url: str) -> Iterator[Stack]:
    s = start_stack({"openai": [{}], "anthropic": [{}]}, LOG_STORE_URL=stack_pg_url, LOG_WRITER_INTERVAL_S="0.2")
    try:
        yield s
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


async def test_each_request_leaves_two_rows_in_the_store_and_logs_reads_them(
    pg_stack: Stack, stack_pg_url: str, redis_of: Any
) -> None:
    store = PgLogStore(stack_pg_url, retention_s=RETENTION_DAYS * 86400)
    before = await store.count()
    n = 12
    with pg_stack.client(role="user") as api:
        for i in range(n):
            body = user_chat(f"log store {i}", provider=("openai", "anthropic")[i % 2])
            assert api.post("/api/v1/llm/chat/completions", json=body).status_code == 200
    deadline = time.monotonic() + 15
    while await store.count() < before + 2 * n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await store.count() == before + 2 * n
    await store.aclose()
    assert redis_of(pg_stack).xlen(keys.request_logs()) == 0  # drained: Redis holds no log it wrote

    with pg_stack.client(role="admin") as admin:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 5, "provider": "anthropic", **({"cursor": cursor} if cursor else {})}
            data = admin.get("/api/v1/llm/logs", params=params).json()["data"]
            ids += [e["id"] for e in data["logs"]]
            assert {e["provider"] for e in data["logs"]} <= {"anthropic"}
            cursor = data["nextCursor"]
            if cursor is None:
                break
        assert len(ids) == len(set(ids)) == n  # 6 requests, a request and a response log each
        responses = admin.get("/api/v1/llm/logs", params={"type": "response", "limit": 1000}).json()["data"]
        assert responses["count"] == n and {e["type"] for e in responses["logs"]} == {"response"}
        # stream ids go to 2**64 - 1, PostgreSQL's bigint to 2**63 - 1: past it lies nothing, not an error
        far = admin.get("/api/v1/llm/logs", params={"cursor": "9999999999999999999-9999999999999999999"})
        assert far.status_code == 200 and far.json()["data"]["logs"] == []
        # the store away: 503 with a retry hint, and the logs wait in Redis (the next test shows they arrive)
        set_connections_allowed(stack_pg_url, False)
        try:
            down = admin.get("/api/v1/llm/logs")
            assert down.status_code == 503 and down.json()["error"]["type"] == "service_unavailable"
        finally:
            set_connections_allowed(stack_pg_url, True)
        assert admin.get("/api/v1/llm/logs").status_code == 200


async def test_requests_are_served_while_the_store_is_away_and_their_logs_arrive_after(
    pg_stack: Stack, stack_pg_url: str, redis_of: Any
) -> None:
    store = PgLogStore(stack_pg_url, retention_s=RETENTION_DAYS * 86400)
    before = await store.count()
    await store.aclose()
    n = 10
    set_connections_allowed(stack_pg_url, False)
    try:
        with pg_stack.client(role="user") as api:
            for i in range(n):
                assert api.post("/api/v1/llm/chat/completions", json=user_chat(f"away {i}")).status_code == 200
        await asyncio.sleep(1.0)  # several writer runs fail meanwhile
        assert redis_of(pg_stack).xlen(keys.request_logs()) == 2 * n  # waiting in the buffer
    finally:
        set_connections_allowed(stack_pg_url, True)
    store = PgLogStore(stack_pg_url, retention_s=RETENTION_DAYS * 86400)
    deadline = time.monotonic() + 15
    while await store.count() < before + 2 * n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await store.count() == before + 2 * n
    await store.aclose()
    assert redis_of(pg_stack).xlen(keys.request_logs()) == 0


# --- the same reads as the Redis stream


QUERIES: list[dict[str, Any]] = [
    {},
    {"kind": "request"},
    {"provider": "anthropic"},
    {"kind": "error", "provider": "openai"},
    {"start_ms": NOW - 3 * DAY_MS + 200, "end_ms": NOW - 3 * DAY_MS + 900},
    {"start_ms": NOW - 3 * DAY_MS + 350, "kind": "response"},
    {"end_ms": NOW - 3 * DAY_MS + 100},
    {"start_ms": NOW + DAY_MS},
]


async def read_all(reader: Any, query: dict[str, Any], limit: int) -> list[tuple[list[dict[str, Any]], str | None]]:
    pages = []
    cursor = None
    for _ in range(1000):
        page = await reader.read(**query, limit=limit, cursor=cursor, now_ms=NOW)
        pages.append((page.entries, page.next_cursor))
        cursor = page.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("paging does not end")


async def test_filters_and_paging_give_what_the_redis_store_gives(
    redis_url: str, buffer: Redis, store: PgLogStore
) -> None:
    redis_store = connect(db_url(redis_url, 2))
    await redis_store.flushdb()
    try:
        start = NOW - 3 * DAY_MS
        await write_entries(RequestLog(redis_store, retention_s=RETENTION_DAYS * 86400), 400, start)
        await write_entries(RequestLog(buffer, retention_s=RETENTION_DAYS * 86400), 400, start)
        assert await keeper(buffer, store).run_once(NOW) == 400
        assert await store.count() == 400
        redis_reader = RequestLog(redis_store, retention_s=RETENTION_DAYS * 86400)
        for query, limit in itertools.product(QUERIES, (1, 7, 100, 1000)):
            got = await read_all(store, query, limit)
            assert got == await read_all(redis_reader, query, limit), (query, limit)
        # a page's entries are the stream's, byte for byte: what /logs shows does not depend on the store
        first = (await store.read(limit=1, now_ms=NOW)).entries[0]
        assert first == {"id": f"{start}-0", "timestamp": "2026-09-18T14:13:20.000Z", **entry(0)}
    finally:
        await redis_store.aclose()


async def test_retention_drops_whole_daily_partitions(buffer: Redis, store: PgLogStore) -> None:
    days = [NOW - d * DAY_MS for d in (35, 31, 29, 2, 0)]
    log = RequestLog(buffer, retention_s=RETENTION_DAYS * 86400)
    for ms in days:
        await log.write(entry(0), now_ms=ms)
    k = keeper(buffer, store)
    for ms in days:  # each written while it was recent (the writer skips what is already past retention)
        await k.run_once(ms)
    pool = await store.pool()
    async with pool.acquire() as conn:
        before = {r["relname"] for r in await conn.fetch(PARTITIONS)}
        assert len(before) == 5
        dropped = await store.drop_expired(NOW)
        after = {r["relname"] for r in await conn.fetch(PARTITIONS)}
    assert len(dropped) == 2 and after == before - set(dropped)
    assert await store.count() == 3
    assert [e["timestamp"][:10] for e in (await store.read(now_ms=NOW)).entries] == [
        "2026-08-23",
        "2026-09-19",
        "2026-09-21",
    ]


async def test_the_writer_rides_out_the_store_being_away_and_never_writes_twice(
    pg_url: str, buffer: Redis, store: PgLogStore
) -> None:
    log = RequestLog(buffer, retention_s=RETENTION_DAYS * 86400)
    k = keeper(buffer, PgLogStore(pg_url, retention_s=RETENTION_DAYS * 86400))
    await write_entries(log, 300, NOW - 1000, step_ms=1)
    assert await k.run_once(NOW) == 300
    set_connections_allowed(pg_url, False)
    try:
        await write_entries(log, 500, NOW, step_ms=1)
        assert await k.run_once(NOW + 100) == 0  # refused: the entries wait in Redis
        assert await k.run_once(NOW + 200) == 0
        assert await buffer.xlen(keys.request_logs()) == 500
    finally:
        set_connections_allowed(pg_url, True)
    # a crash between a write and its trim: the next writer writes the batch again, which adds nothing
    rows = await buffer.xrange(keys.request_logs(), count=100)
    await store.write([LogRow.of(i.decode(), f) for i, f in rows], NOW)
    assert await k.run_once(NOW + 300) == 500
    assert await store.count() == 800
    assert await buffer.xlen(keys.request_logs()) == 0
    assert (await k.stats()).dropped == 0
    await k.stop()


async def test_the_buffer_stays_bounded_while_the_store_is_away_and_counts_what_it_drops(
    pg_url: str, buffer: Redis, store: PgLogStore
) -> None:
    cap = 500
    log = RequestLog(buffer, retention_s=RETENTION_DAYS * 86400, max_entries=cap)
    k = keeper(buffer, PgLogStore(pg_url, retention_s=RETENTION_DAYS * 86400))
    await k.run_once(NOW - 20_000)  # a keeper runs from the workers' start: the count starts there
    set_connections_allowed(pg_url, False)
    try:
        await write_entries(log, 3000, NOW - 10_000, step_ms=1)
        assert await k.run_once(NOW) == 0
        held = await buffer.xlen(keys.request_logs())
        # an approximate MAXLEN trims whole stream nodes (100 entries): never more than a node over
        assert cap <= held <= cap + 100
        stats = await k.stats()
        assert stats.dropped == 3000 - held == k.dropped
    finally:
        set_connections_allowed(pg_url, True)
    assert await k.run_once(NOW + 1) == held
    assert await store.count() == held
    assert (await k.stats()).dropped == 3000 - held  # drops stay counted; nothing written is counted in
    await k.stop()


async def test_a_row_the_store_refuses_or_a_partition_dropped_by_hand_does_not_stop_the_writer(
    buffer: Redis, store: PgLogStore
) -> None:
    log = RequestLog(buffer, retention_s=RETENTION_DAYS * 86400)
    await write_entries(log, 5, NOW, step_ms=1)
    await buffer.xadd(keys.request_logs(), {"t": "request", "p": "openai", "d": b'{"broken":'}, id=f"{NOW + 10}-0")
    await write_entries(log, 5, NOW + 20, step_ms=1)
    k = keeper(buffer, store)
    assert await k.run_once(NOW + 30) == 11  # taken out of the stream: 10 written, the broken one skipped
    assert await store.count() == 10
    pool = await store.pool()
    async with pool.acquire() as conn:
        for record in await conn.fetch(PARTITIONS):
            await conn.execute(f"DROP TABLE {record['relname']}")
    await write_entries(log, 3, NOW + 40, step_ms=1)
    assert await k.run_once(NOW + 50) == 3
    assert await store.count() == 3
