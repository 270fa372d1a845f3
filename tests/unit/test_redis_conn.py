"""The gateway's Redis connections: commands packed by hiredis (same bytes on the wire, same errors),
written at once, and pooled connections checked from what the event loop has received."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plumbing.redis_connection import HiredisPacking, connect

ARGS: list[tuple[object, ...]] = [
    ("SET", "key", "välue ✓"),
    ("HSET", b"h", "f", 1.5, "g", -7, "big", 2**70),
    ("SCRIPT LOAD", "return 1"),  # a two-word command, as redis-py passes it
    ("XADD", "s", "MINID", "~", 0.0016666666666666668, "*", "d", memoryview(b"\x00\xff")),
]


def test_packs_exactly_what_redis_py_packs() -> None:
    ours, theirs = connect("redis://127.0.0.1:1").connection_pool.make_connection(), Connection()
    assert isinstance(ours, HiredisPacking)
    for args in ARGS:
        assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))
    assert b"".join(ours.pack_commands(ARGS)) == b"".join(theirs.pack_commands(ARGS))
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", True)  # as redis-py: no silent bool or None on the wire


async def test_commands_and_pipelines_work_end_to_end(r: aioredis.Redis) -> None:
    async with r.pipeline(transaction=False) as pipe:
        pipe.set("k", "välue ✓").hset("h", mapping={"f": 1.5}).incrbyfloat("n", 0.25).get("k")
        assert await pipe.execute() == [True, 1, 0.25, "välue ✓".encode()]
    assert await r.hget("h", "f") == b"1.5"


async def test_a_command_leaves_without_waiting_for_a_turn_of_the_event_loop(r: aioredis.Redis) -> None:
    conn = await r.connection_pool.get_connection()
    try:
        turned = False

        def turn() -> None:
            nonlocal turned
            turned = True

        asyncio.get_running_loop().call_soon(turn)
        await conn.send_command("PING")
        assert not turned  # written at once (redis-py's wait_for ran the write in a new task)
        assert await conn.read_response() == b"PONG"
    finally:
        await r.connection_pool.release(conn)


async def test_a_pooled_connection_the_server_closed_is_replaced_before_use(r: aioredis.Redis) -> None:
    await r.set("k", "v")
    conn = await r.connection_pool.get_connection()
    client_id = await conn.retry.call_with_retry(lambda: _client_id(conn), lambda _: None)
    await r.connection_pool.release(conn)
    async with connect(_url(r)) as other:
        assert await other.client_kill_filter(_id=client_id) == 1
    await _until(lambda: conn._reader is not None and conn._reader.at_eof())
    assert await r.get("k") == b"v"  # the pool saw the end of stream and reconnected first
    assert await r.client_id() != client_id


async def test_a_pooled_connection_with_unread_data_is_replaced(r: aioredis.Redis) -> None:
    conn = await r.connection_pool.get_connection()
    await conn.send_command("PING")  # its reply is never read
    await r.connection_pool.release(conn)
    await _until(lambda: conn._reader is not None and not conn._socket_is_empty())
    assert await r.set("k", "v") is True  # not answered with the stray PONG
    assert await r.get("k") == b"v"


async def test_a_write_that_cannot_finish_in_time_is_a_timeout_and_drops_the_connection(r: aioredis.Redis) -> None:
    conn = await r.connection_pool.get_connection()
    conn.socket_timeout = 0.05
    stuck = asyncio.Event()

    async def drain() -> None:
        await stuck.wait()  # as a peer that stopped reading

    writer = conn._writer
    assert writer is not None
    writer.transport.get_write_buffer_size = lambda: 1  # type: ignore[method-assign]  # bytes left unsent
    writer.drain = drain  # type: ignore[method-assign]
    with pytest.raises(RedisTimeoutError):
        await conn.send_command("PING")
    assert not conn.is_connected
    await r.connection_pool.release(conn)
    assert await r.ping() is True


async def test_pipeline_replies_arriving_together_come_back_in_place_with_their_errors(r: aioredis.Redis) -> None:
    await r.set("s", "text")
    async with r.pipeline(transaction=False) as pipe:
        pipe.incr("n").incr("s").hset("h", "f", "v").hgetall("h").get("missing")
        replies = await pipe.execute(raise_on_error=False)
    assert replies[0] == 1 and replies[2] == 1 and replies[3] == {b"f": b"v"} and replies[4] is None
    assert isinstance(replies[1], ResponseError)  # a failed command's reply is its error, in its place
    assert await r.incr("n") == 2  # the connection went on in step


async def _client_id(conn: AbstractConnection) -> int:
    await conn.send_command("CLIENT", "ID")
    return int(await conn.read_response())


def _url(r: aioredis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the event loop until `check` holds (the loop must first process the socket)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.001)
