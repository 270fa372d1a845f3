"""The API's pipelined admission lane: replies matched in order, errors to their own callers, a lost
connection replaced, a command in flight never sent twice, a stuck reply timed out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plumbing.redis_connection import connect
from plumbing.redis_lane import RedisLane

INCR_BY_ARG = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def lane(r: Redis) -> AsyncIterator[RedisLane]:
    lane = RedisLane(r)
    yield lane
    await lane.aclose()


async def lane_client_id(r: Redis) -> int:
    """The id of the lane's connection (the one client that is not `r`'s own)."""
    mine = await r.client_id()
    others = [c for c in await r.client_list() if int(c["id"]) != mine]
    assert len(others) == 1, others
    return int(others[0]["id"])


async def test_concurrent_commands_each_get_their_own_reply(lane: RedisLane, r: Redis) -> None:
    replies = await asyncio.gather(*(lane.execute("ECHO", f"request {i}") for i in range(300)))
    assert replies == [f"request {i}".encode() for i in range(300)]
    assert await lane_client_id(r)  # all of them on one connection


async def test_an_error_reply_fails_only_its_own_command(lane: RedisLane, r: Redis) -> None:
    await r.set("text", "not a number")
    results = await asyncio.gather(
        lane.execute("INCR", "counter"),
        lane.execute("INCR", "text"),
        lane.execute("INCR", "counter"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "not an integer" in str(results[1])


async def test_a_script_redis_lost_runs_from_its_source(lane: RedisLane, r: Redis) -> None:
    script = r.register_script(INCR_BY_ARG)
    assert await lane.evalsha(script, ["k"], [41]) == 41
    await r.script_flush()
    assert await lane.evalsha(script, ["k"], [1]) == 42  # NOSCRIPT, then by its source
    assert await lane.evalsha(script, ["k"], [1]) == 43  # and Redis has it again


async def test_a_connection_redis_closed_is_replaced_before_the_next_command(lane: RedisLane, r: Redis) -> None:
    assert await lane.execute("ECHO", "first") == b"first"
    killed = await lane_client_id(r)
    await r.client_kill_filter(_id=killed)
    async with asyncio.timeout(5):  # the reader sees the close by itself, with no command in flight
        while lane.connected:
            await asyncio.sleep(0.01)
    assert await lane.execute("ECHO", "again") == b"again"  # on a new connection
    assert await lane_client_id(r) != killed


async def test_a_command_in_flight_when_the_connection_dies_fails_and_is_not_sent_again(
    lane: RedisLane, r: Redis
) -> None:
    popping = asyncio.create_task(lane.execute("BLPOP", "jobs", 0))
    async with asyncio.timeout(5):
        while not any(c["cmd"] == "blpop" for c in await r.client_list()):
            await asyncio.sleep(0.01)
    await r.client_kill_filter(_id=await lane_client_id(r))
    with pytest.raises(RedisConnectionError):
        await popping
    await r.rpush("jobs", "one")
    assert await lane.execute("ECHO", "still usable") == b"still usable"
    assert await r.lrange("jobs", 0, -1) == [b"one"]  # no second BLPOP took it


async def test_a_reply_slower_than_the_socket_timeout_fails_and_the_lane_recovers(redis_url: str) -> None:
    client = connect(redis_url, socket_timeout=0.2)
    lane = RedisLane(client)
    try:
        with pytest.raises(RedisTimeoutError):
            await lane.execute("BLPOP", "nothing", 5)
        assert await lane.execute("ECHO", "next") == b"next"  # not the late BLPOP's reply
    finally:
        await lane.aclose()
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_replies_in_step(lane: RedisLane) -> None:
    waiting = asyncio.create_task(lane.execute("BLPOP", "nothing", 0.3))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await lane.execute("ECHO", "mine") == b"mine"  # after the BLPOP's own (nil) reply


async def test_redis_unreachable_is_a_connection_error(lane: RedisLane) -> None:
    dead = connect("redis://127.0.0.1:1/0")
    unreachable = RedisLane(dead)
    try:
        with pytest.raises(RedisConnectionError):
            await unreachable.execute("PING")
    finally:
        await unreachable.aclose()
        await dead.aclose()


async def test_commands_sent_together_get_their_replies_and_errors_in_place(lane: RedisLane, r: Redis) -> None:
    await r.set("text", "not a number")
    replies = await lane.execute_many([("INCR", "n"), ("INCR", "text"), ("GET", "n")])
    assert replies[0] == 1 and replies[2] == b"1"
    assert isinstance(replies[1], ResponseError)  # as a pipeline's raise_on_error=False gives it
