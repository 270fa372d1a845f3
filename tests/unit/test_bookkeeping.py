"""Bookkeeping after an answer: deferred a little, batched into one round trip, never lost on drain."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from shared.bookkeeping import Bookkeeper
from shared.round_trip import RoundTrip


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = RoundTrip.send

    async def counting(self: RoundTrip) -> list[object]:
        sizes.append(len(self))
        return await real(self)

    monkeypatch.setattr(RoundTrip, "send", counting)
    return sizes


async def test_fills_handed_over_together_run_later_in_one_round_trip(r: aioredis.Redis, sends: list[int]) -> None:
    keeper = Bookkeeper(r, delay_s=0.05)
    ran: list[int] = []

    def fill(i: int):  # type: ignore[no-untyped-def]
        def run(trip: RoundTrip) -> None:
            ran.append(i)
            trip.pipe.incr("n")

        return run

    for i in range(5):
        keeper.add(fill(i))
    assert ran == [] and sends == []  # nothing yet: the answer goes first
    await keeper.drain()  # what a stopping worker does; otherwise the timer would fire
    assert ran == [0, 1, 2, 3, 4] and sends == [5]
    assert await r.get("n") == b"5"


async def test_the_timer_sends_and_a_failing_fill_costs_the_others_nothing(r: aioredis.Redis) -> None:
    keeper = Bookkeeper(r, delay_s=0.001)

    def broken(trip: RoundTrip) -> None:
        raise ValueError("a bug in one observer")

    keeper.add(broken)
    keeper.add(lambda trip: trip.pipe.incr("n"))
    async with asyncio.timeout(5):
        while await r.get("n") is None:
            await asyncio.sleep(0.005)
    assert await r.get("n") == b"1"
    await keeper.drain()
