"""One subscriber connection per process that hands finished outcomes to the requests awaiting them.

A waiter registers its future *before* the request is enqueued, so no signal can be missed. If the
subscription drops, every pending waiter is checked against Redis once it is back.

Streamed requests' deltas arrive on the same channel (`<request id>|S|...`, see shared/streams.py):
they, and every outcome, also go to the process's `StreamListener` (the API's stream hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared import keys
from shared.queue import TERMINAL, Outcome
from shared.signals import wait_for_bell
from shared.streams import STREAM_CODE

_STREAM_MARK = STREAM_CODE + b"|"


class StreamListener(Protocol):
    def deltas(self, request_id: str, body: bytes) -> None:
        """A batch of a streamed request's deltas (`body`: what follows `<request id>|S|`)."""
        ...

    def ended(self, request_id: str, outcome: Outcome) -> None:
        """A request's outcome."""
        ...

    def resubscribed(self) -> None:
        """The subscription came back: anything published meanwhile was missed."""
        ...


log = logging.getLogger(__name__)


class Waiter:
    def __init__(self, redis: Redis, instance: str | None = None, listener: StreamListener | None = None) -> None:
        self.redis = redis
        self.listener = listener
        self.instance = instance or uuid.uuid4().hex
        self.channel = keys.reply_channel(self.instance)
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outcome-subscriber")
            # Best effort: start-up goes on when Redis is down, waits get reconciled later. (Not
            # asyncio.wait_for: it can lose a cancellation of the start-up, see wait_for_bell.)
            await wait_for_bell(self._subscribed, 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def expect(self, request_id: str) -> asyncio.Future[Outcome]:
        """Register interest in a request's outcome. An outcome that arrives before `wait` is kept
        (the future stays registered, done) until `wait` or `forget` collects it."""
        fut = self._pending.get(request_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[request_id] = fut
        return fut

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def resolve(self, request_id: str, outcome: Outcome) -> None:
        fut = self._pending.get(request_id)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    async def wait(self, request_id: str, timeout: float) -> Outcome | None:
        """Await an expected outcome (already arrived or not); None when the timeout passes first."""
        fut = self.expect(request_id)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation of the request that
            # arrives with its outcome (see shared.signals.wait_for_bell)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            return None
        finally:
            if self._pending.get(request_id) is fut:
                self.forget(request_id)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                await self._reconcile()
                if self.listener is not None:
                    self.listener.resubscribed()
                backoff = 0.05
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("outcome subscriber lost Redis (%s); reconnecting", type(exc).__name__)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _dispatch(self, data: bytes) -> None:
        raw_id, _, stored = data.partition(b"|")
        request_id = raw_id.decode()
        listener = self.listener
        if stored.startswith(_STREAM_MARK):
            if listener is not None:
                listener.deltas(request_id, stored[len(_STREAM_MARK) :])
            return
        outcome = Outcome.parse(stored)
        self.resolve(request_id, outcome)
        if listener is not None:
            listener.ended(request_id, outcome)

    async def _reconcile(self) -> None:
        """After (re)subscribing, settle any waiter whose outcome was published while we were away."""
        ids = list(self._pending)
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hmget(keys.request(rid), ["status", "result"])
            rows = await pipe.execute()
        for rid, (status, result) in zip(ids, rows, strict=True):
            if status and status.decode() in TERMINAL and result:
                self.resolve(rid, Outcome.parse(result))
