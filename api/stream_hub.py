"""The API process's streams: the deltas and outcomes its one subscriber receives, handed to the clients
following each request, and the count of client streams open.

Nothing here opens a Redis connection: deltas arrive on the process's reply channel (the waiter's
subscription, `shared/waiter.py`), on which the worker's relay publishes them (`shared/streams.py`).
Each client stream is a `Follower`: a queue of what arrived for its request, read by the stream's
writer (`api/stream_flow.py`). A process following one request for several clients holds one
follower per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.queue import Outcome, now_ms
from shared.streams import OPEN_STREAMS_EVERY_S, StreamMessage, open_streams_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resync:
    """The subscription dropped and came back: what was published meanwhile must be read again."""


Arrival = StreamMessage | Outcome | Resync


class Follower:
    """One client stream's inbox: deltas and the outcome of its request, in the order they arrived."""

    __slots__ = ("_bell", "_items", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._items: deque[Arrival] = deque()
        self._bell = asyncio.Event()

    def put(self, item: Arrival) -> None:
        self._items.append(item)
        self._bell.set()

    async def get(self, timeout_s: float | None) -> Arrival | None:
        """The next arrival, or None when `timeout_s` passes first."""
        while not self._items:
            self._bell.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._bell.wait()
            except TimeoutError:
                return None
        return self._items.popleft()

    @property
    def pending(self) -> bool:
        """Whether an arrival waits to be read."""
        return bool(self._items)


class StreamHub:
    """The followers of this process, by request id; fed by the waiter's dispatch."""

    def __init__(self, redis: Redis, instance: str) -> None:
        self.redis = redis
        self.instance = instance
        self._followers: dict[str, list[Follower]] = {}
        self.open = 0  # client streams open in this process
        self._written = -1
        self._writer: asyncio.Task[None] | None = None

    def follow(self, request_id: str) -> Follower:
        follower = Follower(request_id)
        self._followers.setdefault(request_id, []).append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        found = self._followers.get(follower.request_id)
        if found is not None:
            with contextlib.suppress(ValueError):
                found.remove(follower)
            if not found:
                del self._followers[follower.request_id]

    def following(self, request_id: str) -> bool:
        return request_id in self._followers

    # -- fed by the waiter's subscriber ---------------------------------------------------------

    def deltas(self, request_id: str, body: bytes) -> None:
        found = self._followers.get(request_id)
        if found:
            message = StreamMessage.parse(body)
            for follower in found:
                follower.put(message)

    def ended(self, request_id: str, outcome: Outcome) -> None:
        for follower in self._followers.get(request_id, ()):
            follower.put(outcome)

    def resubscribed(self) -> None:
        for found in self._followers.values():
            for follower in found:
                follower.put(Resync())

    # -- the open streams gauge -----------------------------------------------------------------

    def opened(self) -> None:
        self.open += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_open(), name="streams-open")

    def closed(self) -> None:
        self.open -= 1

    async def _write_open(self) -> None:
        """Write this process's count while it has streams open, and once more when none is left."""
        while True:
            if self.open != self._written or self.open:
                try:
                    entry = open_streams_entry(self.open, now_ms())
                    await self.redis.hset(keys.streams_open(), self.instance, entry)  # type: ignore[misc,arg-type]
                    self._written = self.open
                except (RedisError, OSError) as exc:
                    log.warning("open streams not counted (%s)", type(exc).__name__)
            if not self.open and self._written == 0:
                return
            await asyncio.sleep(OPEN_STREAMS_EVERY_S)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._writer
            with contextlib.suppress(RedisError, OSError):
                await self.redis.hdel(keys.streams_open(), self.instance)  # type: ignore[misc]
