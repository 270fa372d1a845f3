"""The waiter hands each outcome to its request, whether it arrives before or after the wait starts."""

from __future__ import annotations

import asyncio

import fakeredis

from shared.queue import Outcome
from shared.waiter import Waiter


def waiter() -> Waiter:
    return Waiter(fakeredis.FakeAsyncRedis(), instance="test")


async def test_outcome_arriving_before_the_wait_is_not_lost() -> None:
    w = waiter()
    w.expect("r1")
    w.resolve("r1", Outcome("succeeded", b"{}"))  # the worker was faster than the route
    assert await w.wait("r1", 0.5) == Outcome("succeeded", b"{}")
    assert "r1" not in w._pending


async def test_outcome_arriving_during_the_wait() -> None:
    w = waiter()
    w.expect("r2")
    asyncio.get_running_loop().call_later(0.01, w.resolve, "r2", Outcome("failed", b"{}"))
    assert await w.wait("r2", 5) == Outcome("failed", b"{}")


async def test_timeout_forgets_the_request() -> None:
    w = waiter()
    w.expect("r3")
    assert await w.wait("r3", 0.01) is None
    assert "r3" not in w._pending
    w.resolve("r3", Outcome("succeeded", b"{}"))  # a late outcome for nobody is dropped
    assert "r3" not in w._pending


async def test_outcomes_for_unexpected_requests_are_ignored() -> None:
    w = waiter()
    w.resolve("nobody", Outcome("succeeded", b"{}"))
    assert w._pending == {}


async def test_a_wait_cancelled_as_its_outcome_arrives_is_cancelled() -> None:
    w = waiter()
    w.expect("r4")
    waiting = asyncio.create_task(w.wait("r4", 60))
    await asyncio.sleep(0)  # the wait has started
    w.resolve("r4", Outcome("succeeded", b"{}"))
    waiting.cancel()  # in the same turn: the caller gave up (asyncio.wait_for on 3.11 lost this)
    done, _ = await asyncio.wait({waiting}, timeout=5)
    assert waiting in done and waiting.cancelled()
    assert "r4" not in w._pending
