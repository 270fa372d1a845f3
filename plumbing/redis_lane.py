"""One pipelined Redis connection for the hot path's commands: the API's admission script, a
worker's round trips (its outcomes, limits draws and bookkeeping: `plumbing.round_trip`).

redis-py's asyncio client spends more time around each command than the command's own work on the
client (bench/README.md has the figures): the pool's lock and its zero-timeout read check of the
connection, the retry wrapper, the script wrapper's argument tuples; a pipeline the same per round
trip. At one request at a time that was the largest step of the API's path to Redis and of a worker's
from its outcome to Redis. A lane
writes each command (or round trip) the moment it is asked for, on one connection it keeps, and a
reader task hands the replies back in order (Redis answers a connection's commands in order), so
concurrent requests share it, pipelined; the reader also sees at once when Redis closes the
connection, so the next command reconnects instead of failing on a dead socket (the pool's check
before use, for free).

The connection itself (AUTH, SELECT, TLS or a Unix socket, connect retries) is redis-py's own, made
from the client's pool settings. One difference on purpose: a command whose connection is lost
after it was written is not sent again (redis-py's retry would resend it, and an admission run
twice takes its limits and enqueues twice); its caller gets ConnectionError, as a caller whose
Redis went away mid-command must expect anyway. A READONLY reply (the server became a replica: a
failover) ends the connection the same way, so that the next command reconnects to the primary
(through Sentinel when it names it). A reply slower than the socket timeout fails that
command with TimeoutError and the connection with it (the replies after it would be misread).

Third-party internals touched (redis-py 5.x; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py):
- `AbstractConnection._parser`, whose `read_response` the reader task calls directly;
- a connection made outside its pool, from `ConnectionPool.connection_class` and
  `connection_kwargs`; its `pack_commands` and `send_packed_command(check_health=False)`;
- `AsyncScript.sha` and `AsyncScript.script`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class RedisLane:
    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._conn: AbstractConnection | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def evalsha(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered script by its SHA; by its source if Redis lost it (a restart, SCRIPT FLUSH)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script_source(script), len(keys), *keys, *args)

    async def evalsha_and(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], command: Sequence[Any]
    ) -> tuple[Any, Any]:
        """Run a registered script and, in the same write on the same connection, one more command
        (a WAIT, which covers the writes of its own connection); both replies (an error reply raises)."""
        replies = await self.execute_many([("EVALSHA", script.sha, len(keys), *keys, *args), command])
        if isinstance(replies[0], NoScriptError):
            replies = await self.execute_many([("EVAL", script_source(script), len(keys), *keys, *args), command])
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies[0], replies[1]

    async def execute(self, *args: Any) -> Any:
        """Send one command now and wait for its reply (an error reply raises, as in redis-py)."""
        (reply,) = await self.execute_many([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send commands now, in one write, and wait for their replies; an error reply is returned as
        its exception (a pipeline's `raise_on_error=False`). A lost connection raises."""
        conn = self._conn
        if conn is None:
            conn = await self._connect()
        loop = asyncio.get_running_loop()
        replies: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        self._pending.extend(replies)  # before the write: replies are matched in the order sent
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        except BaseException as exc:
            _cancel(replies)  # this caller gets the exception itself
            self._lost(conn, exc)  # a write that failed or was cut short leaves the connection unusable
            raise
        try:
            async with asyncio.timeout(self._timeout):
                return [await reply for reply in replies]
        except TimeoutError:
            _cancel(replies)
            self._lost(conn, RedisTimeoutError("Timeout reading from Redis"))
            raise RedisTimeoutError("Timeout reading from Redis") from None
        except BaseException:
            _cancel(replies)  # cancelled: the replies still come, and are dropped
            raise

    async def aclose(self) -> None:
        reader, conn = self._reader, self._conn
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if conn is not None:
            self._lost(conn, RedisConnectionError("the lane was closed"))
            await conn.disconnect()

    async def _connect(self) -> AbstractConnection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None:
                # redis-py's connection, from the client's settings: its own retries, ConnectionError or TimeoutError
                conn: AbstractConnection = self._pool.connection_class(**self._pool.connection_kwargs)
                await conn.connect()  # type: ignore[no-untyped-call]
                self._conn = conn
                self._reader = asyncio.create_task(self._read_replies(conn), name="redis-lane-reader")
            return self._conn

    async def _read_replies(self, conn: AbstractConnection) -> None:
        """Hand each reply to the oldest waiting command, until the connection ends."""
        parser = conn._parser
        try:
            while True:
                reply = await parser.read_response()  # type: ignore[attr-defined]
                if not self._pending:
                    raise RedisConnectionError("a reply no command asked for")  # out of step: start over
                if isinstance(reply, ReadOnlyError):  # a replica now: this command and all behind it fail
                    raise RedisConnectionError("Redis answered READONLY: the connection reached a replica")
                waiting = self._pending.popleft()
                if not waiting.done():  # else its caller gave up (cancelled or timed out)
                    waiting.set_result(reply)  # an error reply too: its exception, as a value
        except asyncio.CancelledError:
            await conn.disconnect(nowait=True)
            raise
        except (RedisError, OSError) as exc:
            self._lost(conn, exc)
            await conn.disconnect(nowait=True)
        except BaseException as exc:  # pragma: no cover - a bug in the reader must not strand the callers
            self._lost(conn, exc)
            await conn.disconnect(nowait=True)
            raise

    def _lost(self, conn: AbstractConnection, exc: BaseException) -> None:
        """The connection is done for: every command waiting on it fails, the next one reconnects."""
        if self._conn is not conn:
            return  # already replaced
        self._conn = None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # it disconnects
        error = exc if isinstance(exc, RedisError) else RedisConnectionError(f"Redis connection lost: {exc!r}")
        pending, self._pending = self._pending, collections.deque()
        for waiting in pending:
            if not waiting.done():
                waiting.set_exception(error)


def _cancel(replies: list[asyncio.Future[Any]]) -> None:
    """Drop the replies a caller no longer waits for: those to come are cancelled, a failure already
    set is marked as seen (it went to the caller with the first)."""
    for reply in replies:
        if not reply.cancel() and not reply.cancelled():
            reply.exception()


def script_source(script: AsyncScript | str) -> str:
    """A script's Lua source (read only when Redis answers NOSCRIPT)."""
    if isinstance(script, str):
        return script
    raw = script.script
    return raw if isinstance(raw, str) else bytes(raw).decode()
