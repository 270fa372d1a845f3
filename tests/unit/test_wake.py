"""An enqueue wakes one worker in turn, not all of them; with none to ask, it wakes every worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared import keys
from shared.queue import RequestQueue
from shared.schemas import JobPayload, ProviderCall


def payload(n: int) -> JobPayload:
    return JobPayload(
        request_id=f"req{n:029d}",
        provider="openai",
        call=ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}]),
    )


class Listener:
    """A subscriber on some channels that counts what each receives."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.pubsub = r.pubsub(ignore_subscribe_messages=True)
        self.got: list[str] = []

    async def collect(self, expected: int) -> list[str]:
        async with asyncio.timeout(5):
            while len(self.got) < expected:
                message = await self.pubsub.get_message(timeout=1)
                if message is not None:
                    self.got.append(message["channel"].decode())
        return self.got


@pytest.fixture
async def listener(r: aioredis.Redis) -> AsyncIterator[Listener]:
    listening = Listener(r)
    yield listening
    await listening.pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_enqueues_wake_the_workers_one_at_a_time_in_turn(r: aioredis.Redis, listener: Listener) -> None:
    a, b = keys.worker_wake_channel("openai", "a"), keys.worker_wake_channel("openai", "b")
    await listener.pubsub.subscribe(a, b, keys.wake_channel("openai"))
    await r.rpush(keys.wakers("openai"), a, b)  # type: ignore[misc]
    queue = RequestQueue(r)
    for n in range(4):
        assert await queue.enqueue(payload(n))
    assert await listener.collect(4) == [a, b, a, b]  # never the wake-everyone channel


async def test_a_dead_workers_channel_is_dropped_and_everyone_is_woken(r: aioredis.Redis, listener: Listener) -> None:
    live, dead = keys.worker_wake_channel("openai", "live"), keys.worker_wake_channel("openai", "dead")
    everyone = keys.wake_channel("openai")
    await listener.pubsub.subscribe(live, everyone)
    await r.rpush(keys.wakers("openai"), dead, live)  # type: ignore[misc]
    queue = RequestQueue(r)
    assert await queue.enqueue(payload(1))
    assert await listener.collect(1) == [live]  # the dead one was skipped on the way
    assert await r.lrange(keys.wakers("openai"), 0, -1) == [live.encode()]  # type: ignore[misc]
    await r.delete(keys.wakers("openai"))
    assert await queue.enqueue(payload(2))  # no worker listed at all
    assert await listener.collect(2) == [live, everyone]
