"""Round trips of concurrent tasks merged into one, each caller with its own replies."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from plumbing.coalescer import Coalescer


async def test_tasks_ready_together_share_one_round_trip_and_get_their_own_replies(
    r: aioredis.Redis, sends: list[int]
) -> None:
    trips = Coalescer(r)

    async def caller(i: int) -> list[object]:
        return await trips.send(lambda trip: trip.pipe.incrby("n", i).get("n"))

    replies = await asyncio.gather(*(caller(i) for i in range(1, 11)))
    assert sends == [20]
    totals = [reply[0] for reply in replies]
    assert totals == [sum(range(1, i + 1)) for i in range(1, 11)]  # in the order they were queued
    assert all(reply[1] == str(total).encode() for reply, total in zip(replies, totals, strict=True))


async def test_one_caller_at_a_time_goes_out_at_once(r: aioredis.Redis, sends: list[int]) -> None:
    trips = Coalescer(r)
    for i in range(3):
        assert await asyncio.wait_for(trips.send(lambda trip: trip.pipe.incr("n")), 1) == [i + 1]
    assert sends == [1, 1, 1]


async def test_a_lost_connection_fails_every_caller_and_the_next_trip_works(r: aioredis.Redis) -> None:
    trips = Coalescer(aioredis.Redis(port=1))  # nothing listens there
    results = await asyncio.gather(
        *(trips.send(lambda trip: trip.pipe.incr("n")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, RedisConnectionError) for result in results)
    trips = Coalescer(r)
    assert await trips.send(lambda trip: trip.pipe.incr("n")) == [1]


async def test_a_cancelled_caller_does_not_disturb_the_others(r: aioredis.Redis) -> None:
    trips = Coalescer(r)
    gone = asyncio.create_task(trips.send(lambda trip: trip.pipe.incr("a")))
    stays = asyncio.create_task(trips.send(lambda trip: trip.pipe.incr("b")))
    await asyncio.sleep(0)  # both queued on the same trip
    gone.cancel()
    assert await stays == [1]
    assert await r.get("a") == b"1"  # its commands went out all the same
