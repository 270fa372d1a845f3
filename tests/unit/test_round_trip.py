"""One round trip for the bookkeeping of several parts: order, lost scripts, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from plumbing.redis_lane import RedisLane
from plumbing.round_trip import RoundTrip

INCR_BY_ARG = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture(params=["pool", "lane"])
async def lane(request: pytest.FixtureRequest, r: aioredis.Redis) -> AsyncIterator[RedisLane | None]:
    """Each test runs on a pooled connection (redis-py's pipeline) and on a lane: the same replies."""
    if request.param == "pool":
        yield None
        return
    lane = RedisLane(r)
    yield lane
    await lane.aclose()


async def script_checks(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


async def test_commands_and_scripts_run_in_order_in_one_round_trip(r: aioredis.Redis, lane: RedisLane | None) -> None:
    await r.script_load(INCR_BY_ARG)
    before = await script_checks(r)
    trip = RoundTrip(r, lane)
    trip.pipe.set("k", 1)
    trip.script(INCR_BY_ARG, ["k"], [41])
    trip.script(r.register_script(INCR_BY_ARG), ["k"], [1])
    trip.pipe.get("k")
    assert await trip.send() == [True, 42, 43, b"43"]
    assert await script_checks(r) == before  # the registered script was not checked with SCRIPT EXISTS first


async def test_replies_are_parsed_as_the_pipeline_parses_them(r: aioredis.Redis, lane: RedisLane | None) -> None:
    trip = RoundTrip(r, lane)
    trip.pipe.zadd("z", {"a": 1.5})
    trip.pipe.zrange("z", 0, -1, withscores=True)  # a reply callback with options
    trip.pipe.hset("h", mapping={"f": "v"})
    trip.pipe.hgetall("h")
    trip.pipe.expire("h", 60)
    assert await trip.send() == [1, [(b"a", 1.5)], 1, {b"f": b"v"}, True]
    assert lane is None or lane.connected  # on the lane when there is one


async def test_a_script_redis_lost_runs_again_from_its_source(r: aioredis.Redis, lane: RedisLane | None) -> None:
    trip = RoundTrip(r, lane)
    trip.script(INCR_BY_ARG, ["n"], [5])
    await trip.send()
    await r.script_flush()  # a restarted Redis
    trip.script(INCR_BY_ARG, ["n"], [5])
    trip.pipe.incr("n")
    # the script ran once, after the rest of the trip; nothing else ran twice
    assert await trip.send() == [11, 6]


async def test_a_failing_command_does_not_stop_the_others(r: aioredis.Redis, lane: RedisLane | None) -> None:
    await r.set("text", "abc")
    trip = RoundTrip(r, lane)
    trip.pipe.incr("text")
    trip.pipe.incr("count")
    replies = await trip.send()
    assert isinstance(replies[0], Exception) and replies[1] == 1
    assert await RoundTrip(r, lane).send() == []  # nothing queued: no round trip at all


class Sum:
    """An aggregate: the increments queued on a trip, added up into one INCRBY."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.total = 0

    def flush(self, trip: RoundTrip) -> None:
        trip.pipe.incrby(self.key, self.total)


async def test_an_aggregate_is_shared_by_the_trip_and_sent_once_after_the_rest(
    r: aioredis.Redis, lane: RedisLane | None, caplog: pytest.LogCaptureFixture
) -> None:
    trip = RoundTrip(r, lane)
    for n in (1, 2, 3):
        trip.aggregate("sum", lambda: Sum("total")).total += n
        trip.pipe.get("total")  # a caller's own command: it runs before the aggregate
    await r.config_resetstat()
    assert await trip.send() == [None, None, None]  # the callers' replies only
    assert await r.get("total") == b"6"
    assert (await r.info("commandstats"))["cmdstat_incrby"]["calls"] == 1

    await r.set("text", "not a number")
    trip.aggregate("sum", lambda: Sum("text")).total += 1  # a fresh aggregate on the next use
    assert await trip.send() == []
    assert "aggregated bookkeeping" in caplog.text  # its failure is logged, not lost
