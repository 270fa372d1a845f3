"""Pub/sub doorbells: a channel whose messages only say "look now"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


async def ring_on_message(
    redis: Redis,
    channel: str,
    bell: asyncio.Event,
    what: str,
    *,
    also: Sequence[str] = (),
    on_data: Callable[[bytes], None] | None = None,
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Set `bell` on every message on `channel` (and the channels `also` names), and on each
    (re)subscription, since anything sent while we were not listening was missed. With `on_data`,
    a message other than the doorbell's b"1" is handed to it instead; `on_subscribed` runs once Redis
    has confirmed every subscription. Runs until cancelled; reconnects when Redis drops."""
    channels = [channel, *also]
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(*channels)
            async for message in pubsub.listen():
                kind = message["type"]
                if kind == "message":
                    data = message["data"]
                    if on_data is not None and data != b"1":
                        on_data(data)
                    else:
                        bell.set()
                elif kind == "subscribe" and message["data"] == len(channels):
                    if on_subscribed is not None:
                        await on_subscribed()
                    bell.set()
        except (RedisError, OSError) as exc:
            log.warning("%s subscriber lost Redis (%s); reconnecting", what, type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.5)


async def wait_for_bell(bell: asyncio.Event, timeout: float) -> bool:
    """Wait until `bell` is set or `timeout` seconds pass; True if it was set.

    Not `asyncio.wait_for(bell.wait(), timeout)`: on Python 3.11 that returns the result when a
    cancellation arrives after the bell rang but before the waiting task ran again (CPython
    gh-86296), so a loop stopped by cancelling its task (arq's stop does) went round again and never
    ended. `asyncio.timeout` waits in the task itself, so a cancellation is never lost."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            return await bell.wait()
    return False
