"""Overload sheds, it does not drown: a bound on the work requests one API process holds at once.

Offered more than the box serves, requests queue somewhere, and where they queue decides what the
callers see. Left alone, they queue in front of the gateway's own clock: in the API process's event
loop (requests parsed, their tasks waiting for the CPU) or in the provider's queue behind the
workers' slots, and every one of them, admitted or not, waits longer and longer until its deadline
answers 504, or later (bench/README.md, `overload.py`, has the figures before this bound). The
tenant quota and the enqueue script's backlog peek (api/rate_limits.py) bound waiting on *rate
limits*, not on the box's own capacity, so they refuse nothing there.

Two signals, either of which sheds:
- in flight: by Little's law the requests a process holds are its throughput times their latency, so
  bounding them (`API_MAX_IN_FLIGHT`) bounds the latency of what it admits when the backlog is behind
  the process (workers, providers);
- the event loop's lag (`API_MAX_LOOP_LAG_MS`, off by default): when the process itself is short of
  CPU, requests wait in its socket buffers and its loop before any code of ours sees them,
  uncounted; a timer that wakes late by more than the bound twice in a row says so, and new work is
  refused until it wakes on time again. Off by default because on a host shared with other loads
  (this project's 2-core test machine) the process is descheduled that long without being
  overloaded itself, and light traffic was refused (bench/README.md).
This middleware, in front of everything but the correlation id, counts the work requests (the chat
completions of both APIs, job and batch submissions) under way in this process, until their answer's
head leaves (a stream's body, which may last minutes, holds no CPU between its deltas); one arriving when a
signal says so is answered at once, 503 `service_unavailable` with `Retry-After`, before its body is
read, its token verified or Redis asked: a refusal costs a few microseconds of this process's CPU,
so the admitted keep theirs. Reads (results, long polls, metrics) are not counted nor refused: a
long poll holds no CPU while it waits. The bounds' defaults and how they were chosen are in
bench/README.md.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import ErrorType, GatewayError

RETRY_AFTER_S = 1  # the bound holds ~0.1 s of work: a second later the process is through it
LAG_TICK_S = 0.005  # how often the loop's lag is sampled (200 wakeups a second: negligible CPU)
_MESSAGE = "the gateway is at capacity; retry after the time in Retry-After"


def _answer(body: bytes) -> tuple[dict[str, object], dict[str, object]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
    ]
    return {"type": "http.response.start", "status": 503, "headers": headers}, {
        "type": "http.response.body",
        "body": body,
    }


class ShedMiddleware:
    """Answer 503 with Retry-After to a work request (`paths`, POST) arriving while this process
    holds `max_in_flight` of them. `openai_prefix`: paths answered in OpenAI's error shape."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int | None,
        max_lag_ms: float | None,
        paths: frozenset[str],
        openai_prefix: str,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight if max_in_flight is not None else 1 << 62
        self.max_lag_s = max_lag_ms / 1000 if max_lag_ms is not None else None
        self.lagging = False
        self._lag_task: asyncio.Task[None] | None = None
        self.paths = paths
        self.openai_prefix = openai_prefix
        self.in_flight = 0
        self.refused = 0
        err = GatewayError(ErrorType.SERVICE_UNAVAILABLE, _MESSAGE, retryable=True, retry_after=RETRY_AFTER_S)
        spec_body = orjson.dumps({"success": False, "error": err.to_dict()})
        openai_body = orjson.dumps(
            {"error": {"message": _MESSAGE, "type": ErrorType.SERVICE_UNAVAILABLE.value, "param": None, "code": None}}
        )
        self._spec = _answer(spec_body)
        self._openai = _answer(openai_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self._lag_task is None and self.max_lag_s is not None:
            self._lag_task = asyncio.get_running_loop().create_task(self._watch_lag(self.max_lag_s))
        if self.lagging or self.in_flight >= self.max_in_flight:
            self.refused += 1
            start, body = self._openai if scope["path"].startswith(self.openai_prefix) else self._spec
            await send(start)
            await send(body)
            return
        self.in_flight += 1
        held = True

        async def send_and_release(message: Message) -> None:
            # the work is done once the answer's head leaves: a stream's long body holds no slot
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                self.in_flight -= 1
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            if held:
                self.in_flight -= 1

    async def _watch_lag(self, max_lag_s: float) -> None:
        """Keep `lagging` true while the loop wakes this timer late by more than the bound, twice in a
        row: one late wake-up is a pause (a collection, the process descheduled once), two is a loop
        that has more to do than it can."""
        late_before = False
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            late = time.monotonic() - before - LAG_TICK_S > max_lag_s
            self.lagging = late and late_before
            late_before = late
