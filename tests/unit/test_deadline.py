"""`plumbing.deadline.Deadline`: asyncio.timeout's semantics for one await."""

from __future__ import annotations

import asyncio

import pytest

from plumbing.deadline import Deadline


async def test_the_deadline_cuts_an_await_as_timeout_error() -> None:
    with pytest.raises(TimeoutError), Deadline(0.02):
        await asyncio.sleep(5)
    with pytest.raises(TimeoutError), Deadline(-1):  # already passed: cut at the first suspension
        await asyncio.sleep(0)


async def test_an_await_done_in_time_leaves_no_cancellation_behind() -> None:
    with Deadline(5) as deadline:
        await asyncio.sleep(0.01)
    assert not deadline.expired
    with Deadline(None):
        await asyncio.sleep(0)
    await asyncio.sleep(0.03)  # the timer is gone: nothing cancels this
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_passes_through() -> None:
    async def waits() -> None:
        with Deadline(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_passed_deadline_over_an_await_that_never_suspends_cancels_nothing_later() -> None:
    async def at_once() -> int:
        return 1

    with Deadline(0):
        assert await at_once() == 1
    await asyncio.sleep(0.01)  # not cancelled by a timer left behind
