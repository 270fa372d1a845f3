"""REDIS_DURABILITY: in `replica` mode an acknowledgement waits for one replica (WAIT in the same write)
and a write no replica confirmed is refused (503) and cancelled; the start-up check says what Redis
runs, sets it only when allowed, and never lowers it. Real redis-servers (a primary, a replica)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from devstack.procs import ProcGroup, start_redis
from devstack.redis_ha import start_replica
from plumbing.redis_connection import connect
from plumbing.redis_lane import RedisLane
from shared import keys
from shared.batches import BatchStore
from shared.durability import ReplicaWait, check_redis
from shared.errors import ErrorType, GatewayError
from shared.limits import draw_call
from shared.queue import RequestQueue
from shared.schemas import JobPayload, ProviderCall

CONFIRM = ReplicaWait(1, 2000)  # generous: a loaded CI box may be slow to ack, the test is not about speed


def payload(n: int) -> JobPayload:
    return JobPayload(
        request_id=f"dur{n:029d}",
        provider="openai",
        call=ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=10),
        tenant="alice",
        kind="async",
    )


@pytest.fixture(scope="module")
def primary_with_replica() -> Iterator[str]:
    group = ProcGroup()
    try:
        _, url = start_redis(group, appendonly=True, appendfsync="everysec")
        start_replica(group, int(url.rsplit(":", 1)[1].split("/")[0]))
        yield url
    finally:
        group.stop_all()


@pytest.fixture
async def lone(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """The unit tests' Redis: a primary with no replica."""
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


async def admit(queue: RequestQueue, job: JobPayload) -> bool:
    verdict = await queue.enqueue_if_admitted(job, draw_call([]), draw_call([]))
    return verdict.ok


@pytest.mark.parametrize("via_lane", [True, False], ids=["lane", "pool"])
async def test_an_enqueue_no_replica_confirms_is_refused_and_cancelled(lone: aioredis.Redis, via_lane: bool) -> None:
    lane = RedisLane(lone) if via_lane else None
    queue = RequestQueue(lone, admissions=lane, confirm=CONFIRM)
    try:
        with pytest.raises(GatewayError) as refused:
            await admit(queue, payload(1))
        assert refused.value.type is ErrorType.SERVICE_UNAVAILABLE and refused.value.status == 503
        assert "replica" in refused.value.message and refused.value.retry_after
        record = await queue.record(payload(1).request_id)
        assert record["status"] == "cancelled"  # it will not run behind the caller's back
        with pytest.raises(GatewayError):
            await queue.enqueue(payload(2))  # the programmatic client's enqueue too
    finally:
        if lane is not None:
            await lane.aclose()


async def test_without_replica_mode_nothing_waits(lone: aioredis.Redis) -> None:
    lane = RedisLane(lone)
    queue = RequestQueue(lone, admissions=lane)
    assert await admit(queue, payload(3))
    await lane.aclose()
    assert (await queue.record(payload(3).request_id))["status"] == "queued"
    assert await lone.zcard(keys.queue("openai")) == 1


async def test_a_batch_no_replica_confirms_is_refused_and_cancelled(lone: aioredis.Redis) -> None:
    store = BatchStore(lone, ["openai"], result_ttl_s=60, confirm=CONFIRM)
    await store.create("batch_" + "a" * 32, "alice", {"created_at": 1, "window_s": 60})
    with pytest.raises(GatewayError) as refused:
        await store.activate("batch_" + "a" * 32, "alice", 0, 60, ["openai"], "gateway")
    assert refused.value.status == 503
    # its items are ended (drained) as a cancelled batch's; the feeders finish what a drain leaves
    assert (await store.meta("batch_" + "a" * 32))["status"] in ("cancelling", "cancelled")


async def test_with_a_replica_the_acknowledged_write_is_on_it(primary_with_replica: str) -> None:
    primary = connect(primary_with_replica)
    lane = RedisLane(primary)
    try:
        info = await primary.info("replication")
        replica = connect(f"redis://127.0.0.1:{info['slave0']['port']}/0")
        queue = RequestQueue(primary, admissions=lane, confirm=CONFIRM)
        for n in range(20):
            assert await admit(queue, payload(100 + n))
            # WAIT returned: the replica has it, whatever happens to the primary next
            assert await replica.hget(keys.request(payload(100 + n).request_id), "status") == b"queued"
        await replica.aclose()
    finally:
        await lane.aclose()
        await primary.aclose()


async def test_the_start_up_check_reports_sets_when_allowed_and_never_lowers() -> None:
    group = ProcGroup()
    try:
        proc, url = start_redis(group, appendonly=False)
        client = connect(url)
        assert "NOT held" in await check_redis(client, "everysec", apply=False)
        assert (await client.config_get("appendonly"))["appendonly"] == "no"  # only reported
        assert "set" in await check_redis(client, "always", apply=True)
        assert (await client.config_get("append*")).items() >= {("appendonly", "yes"), ("appendfsync", "always")}
        assert "held" in await check_redis(client, "everysec", apply=True)
        assert (await client.config_get("appendfsync"))["appendfsync"] == "always"  # not lowered
        report = await check_redis(client, "replica", apply=False)
        assert "0 connected replica(s)" in report
        await client.aclose()
    finally:
        proc.kill()  # throwaway data: no AOF to finish writing
        group.stop_all()
