"""A request's deadline over one await: `asyncio.timeout`'s job at a fraction of its cost.

Every synchronous request bounds its admission by its deadline (API) and every provider call its
guards' wait and the call itself (workers), so this runs twice per request on the hot path.
Python 3.11's `asyncio.timeout` is pure Python (a state machine, a `reschedule`, an async context
manager), several times the cost of this (bench/README.md, "Figures behind the code"). This is one
timer handle on the loop (uvloop's, in C) and a flag: the same semantics for one await (the task is cancelled at the
deadline and the cancellation leaves as TimeoutError; a cancellation from elsewhere passes through).

Third-party internals touched: none (asyncio's public task API).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """`with Deadline(seconds):` around awaits; None: no deadline. Raises TimeoutError when the
    deadline cut them short (a deadline already passed cuts at the first suspension)."""

    __slots__ = ("_cancelling", "_handle", "_seconds", "_task", "expired")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.Handle | None = None
        self._cancelling = 0
        self.expired = False

    def __enter__(self) -> Deadline:
        if self._seconds is not None:
            self._task = asyncio.current_task()
            self._cancelling = self._task.cancelling() if self._task is not None else 0
            loop = asyncio.get_running_loop()
            if self._seconds > 0:
                self._handle = loop.call_later(self._seconds, self._expire)
            else:  # passed: before anything else the task awaits runs (as asyncio.timeout does)
                self._handle = loop.call_soon(self._expire)
        return self

    def lift(self) -> None:
        """No deadline from now on (a streamed call's deadline bounds its wait for the first delta)."""
        if self._handle is not None and not self.expired:
            self._handle.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # our cancellation is consumed here (as asyncio.timeout does); one from elsewhere still counts
        if (
            self.expired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
