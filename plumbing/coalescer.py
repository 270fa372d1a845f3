"""Round trips of concurrent tasks merged into one: a process's Redis writes, batched for free.

Under load many jobs of a worker end in the same event-loop iteration, each with a round trip to
make (its outcome, its bookkeeping). `Coalescer.send` queues a caller's commands on the trip being
filled; the first caller starts the task that sends it, whose first step runs on the loop's next
turn: tasks that are ready in this turn add to the trip first, then it is sent once, and each caller
gets its own replies. Nothing waits for a batch to fill, so one request at a time pays no delay; a
thousand at once share a handful of round trips.

Third-party internals touched: none of its own (see `plumbing.round_trip`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from plumbing.interfaces import Fill
from plumbing.redis_lane import RedisLane
from plumbing.round_trip import RoundTrip, logging_failures


class Coalescer:
    """The concrete `interfaces.TripSender`."""

    def __init__(self, redis: Redis, lane: RedisLane | None = None) -> None:
        """`lane`: the connection the trips go on (a worker's: see `plumbing.redis_lane`)."""
        self.redis = redis
        self.lane = lane
        self._trip: RoundTrip | None = None
        self._callers: list[tuple[int, int, asyncio.Future[list[Any]]]] = []  # reply slice per caller
        self._sending: set[asyncio.Task[None]] = set()

    async def send(self, fill: Fill) -> list[Any]:
        """Queue `fill`'s commands on the trip going out at the end of this loop iteration; return
        their replies (a failed command's as its exception). A lost connection raises, for every
        caller of the trip."""
        if self._trip is None:
            self._trip = RoundTrip(self.redis, self.lane)
            task = asyncio.create_task(self._send_queued())  # its first step: the loop's next turn
            self._sending.add(task)  # a strong reference until it is done
            task.add_done_callback(self._sending.discard)
        start = len(self._trip)
        fill(self._trip)
        replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._callers.append((start, len(self._trip), replies))
        return await replies

    async def send_or_log(self, fill: Fill, what: str) -> None:
        """For bookkeeping that must never fail the request it follows: failures are logged."""
        await logging_failures(self.send(fill), what)

    async def _send_queued(self) -> None:
        trip, callers = self._trip, self._callers
        self._trip, self._callers = None, []
        if trip is None:
            return
        try:
            replies = await trip.send()
        except asyncio.CancelledError:  # the process is stopping
            for _, _, future in callers:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in callers:
                if not future.done():
                    future.set_exception(exc)
            return
        for start, end, future in callers:
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(replies[start:end])
