"""One round trip for the bookkeeping of several parts: order, lost scripts, failures."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.round_trip import RoundTrip

INCR_BY_ARG = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def script_checks(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


async def test_commands_and_scripts_run_in_order_in_one_round_trip(r: aioredis.Redis) -> None:
    await r.script_load(INCR_BY_ARG)
    before = await script_checks(r)
    trip = RoundTrip(r)
    trip.pipe.set("k", 1)
    trip.script(INCR_BY_ARG, ["k"], [41])
    trip.script(r.register_script(INCR_BY_ARG), ["k"], [1])
    trip.pipe.get("k")
    assert await trip.send() == [True, 42, 43, b"43"]
    assert await script_checks(r) == before  # the registered script was not checked with SCRIPT EXISTS first


async def test_a_script_redis_lost_runs_again_from_its_source(r: aioredis.Redis) -> None:
    trip = RoundTrip(r)
    trip.script(INCR_BY_ARG, ["n"], [5])
    await trip.send()
    await r.script_flush()  # a restarted Redis
    trip.script(INCR_BY_ARG, ["n"], [5])
    trip.pipe.incr("n")
    # the script ran once, after the rest of the trip; nothing else ran twice
    assert await trip.send() == [11, 6]


async def test_a_failing_command_does_not_stop_the_others(r: aioredis.Redis) -> None:
    await r.set("text", "abc")
    trip = RoundTrip(r)
    trip.pipe.incr("text")
    trip.pipe.incr("count")
    replies = await trip.send()
    assert isinstance(replies[0], Exception) and replies[1] == 1
    assert await RoundTrip(r).send() == []  # nothing queued: no round trip at all
