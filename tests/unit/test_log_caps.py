"""The Redis log stream's caps: by entries on every XADD (the hot path's one log command, unchanged in
count), by bytes and, with no log store, by age in the log keeper. Without `LOG_STORE_URL` these caps are
the logs' retention; with it, they bound the buffer while the store is away."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from plumbing.round_trip import RoundTrip
from shared import keys
from shared.request_log import RequestLog
from shared.settings import Settings
from workers.log_keeper import LogKeeper


def entry(n: int, size: int = 500) -> dict[str, Any]:
    return {"type": "request", "provider": "openai", "requestId": f"r{n}", "content": "x" * size}


def keeper(r: Redis, **settings: Any) -> LogKeeper:
    return LogKeeper(r, Settings(**settings), "test")


async def test_every_append_caps_the_stream_by_entries(r: Redis) -> None:
    log = RequestLog(r, retention_s=86400, max_entries=1000)
    for start in range(0, 5000, 500):
        async with r.pipeline(transaction=False) as pipe:
            for n in range(start, start + 500):
                log.add(pipe, entry(n, 10))
            await pipe.execute()
    # an approximate MAXLEN drops whole stream nodes (100 entries each): never more than a node over
    assert 1000 <= await r.xlen(keys.request_logs()) <= 1100
    held = await r.xlen(keys.request_logs())
    oldest = (await log.read(limit=1)).entries[0]
    assert oldest["requestId"] == f"r{5000 - held}"  # the oldest went


async def test_a_log_write_on_the_hot_path_is_still_one_command(r: Redis) -> None:
    log = RequestLog.from_settings(r, Settings())
    trip = RoundTrip(r)
    log.add(trip.pipe, entry(0))
    assert len(trip) == 1
    await trip.send()
    assert await r.xlen(keys.request_logs()) == 1


async def test_the_keeper_caps_the_stream_by_bytes(r: Redis) -> None:
    cap = 300_000
    log = RequestLog(r, retention_s=86400)
    for start in range(0, 3000, 500):
        async with r.pipeline(transaction=False) as pipe:
            for n in range(start, start + 500):
                log.add(pipe, entry(n))
            await pipe.execute()
    assert (await r.memory_usage(keys.request_logs()) or 0) > 4 * cap
    await keeper(r, log_redis_max_bytes=cap).run_once()
    used = await r.memory_usage(keys.request_logs(), samples=0) or 0
    assert cap / 2 < used <= cap
    # the newest entries are the ones kept
    last = await r.xrevrange(keys.request_logs(), count=1)
    assert b'"r2999"' in last[0][1][b"d"]


async def test_without_a_store_the_keeper_trims_by_age_and_reads_never_return_older(r: Redis) -> None:
    log = RequestLog(r, retention_s=60)
    t0 = int(time.time() * 1000) - 10 * 60_000
    for n in range(300):
        await log.write(entry(n, 10), now_ms=t0)
    later = t0 + 120_000
    await log.write(entry(999, 10), now_ms=later)
    assert await r.xlen(keys.request_logs()) == 301
    await keeper(r, log_retention_days=60 / 86400).run_once(later)
    # MINID ~ drops whole stream nodes: everything old goes but what shares a node with the new entry
    assert await r.xlen(keys.request_logs()) <= 101
    page = await log.read(start_ms=t0 - 1000, now_ms=later)
    assert [e["requestId"] for e in page.entries] == ["r999"]
    assert (await keeper(r).stats()).dropped == 0  # with no store, nothing trimmed counts as dropped
