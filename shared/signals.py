"""Pub/sub doorbells: a channel whose messages only say "look now"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


async def ring_on_message(
    redis: Redis, channel: str, bell: asyncio.Event, what: str, *, also: Sequence[str] = ()
) -> None:
    """Set `bell` on every message on `channel` (and the channels `also` names), and on each
    (re)subscription, since anything sent while we were not listening was missed. Runs until
    cancelled; reconnects when Redis drops."""
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel, *also)
            bell.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    bell.set()
        except (RedisError, OSError) as exc:
            log.warning("%s subscriber lost Redis (%s); reconnecting", what, type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.5)
