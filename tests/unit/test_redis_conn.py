"""The gateway's Redis connections pack commands with hiredis: same bytes on the wire, same errors."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from shared.redis_conn import HiredisPacking, connect

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
