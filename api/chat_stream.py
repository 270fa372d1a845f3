"""A synchronous chat request with `"stream": true`: admitted and enqueued as any other, answered as
Server-Sent Events, on both chat routes (each with its own event format, `api/sse.py`).

The response's head waits for the first event: a request that fails before its first delta (refused,
every provider failed, a provider's 400) gets the same HTTP error as without `stream`, and one that
gets no delta before its deadline a 504; from the first delta on, the status is 200 and the end comes
as the last event (`done`, or an error, never a clean end for a cut stream). `X-Gateway-Request-Id`
names the request: a client that loses its connection resumes with
`GET /api/v1/llm/jobs/{id}/stream` and `Last-Event-ID`.

A cached answer is replayed as a stream (`cached: true` in its end); an identical request in flight
whose leader streams is followed on the leader's own stream: one upstream call serves both.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from starlette.responses import Response

from api import response_cache
from api.cache_flow import LEAD_GRACE_S, abandon_lead, as_cached
from api.chat_flow import ChatContext, admit_sync, error_of, sync_payload
from api.rate_limits import Admitted
from api.sse import EventFormat, EventStream
from api.state import AppState
from api.stream_flow import Deltas, End, Event, StreamReader, closer, live, nothing, render
from shared.errors import ErrorType, GatewayError
from shared.queue import Outcome, now_ms
from shared.schemas import ChatRequest


@dataclass(frozen=True, slots=True)
class StreamAnswers:
    """How a route answers what is not a stream: an error, or a failed outcome."""

    error: Callable[[GatewayError, dict[str, str]], Response]
    failed: Callable[[Outcome, str], Response]
    refusal: Callable[[Response], Response]


async def stream_chat(
    ctx: ChatContext, body: ChatRequest, make_format: Callable[[str, str, int], EventFormat], answers: StreamAnswers
) -> Response:
    """`make_format(request id, model, created s)`: the route's event format for this request."""
    state = ctx.state
    payload, timeout = sync_payload(ctx, body)
    rid = payload.request_id
    fmt = make_format(rid, payload.call.model, payload.created_ms // 1000)
    digest = response_cache.digest(body, state.settings)
    if digest is not None:
        started = time.perf_counter()
        lookup = await state.cache.lookup(digest, rid, timeout + LEAD_GRACE_S)
        if lookup.kind == "hit":
            outcome = as_cached(state, lookup.value, rid, started, ctx.principal.subject)
            return _replay(fmt, [Deltas(1, [{"c": outcome.json().get("content") or ""}]), End(2, outcome)], rid)
        if lookup.kind == "follow":  # the leader's own stream (or its whole answer) serves this request
            return await _follow_leader(state, lookup.leader, payload.deadline_ms or now_ms(), fmt, answers, rid)
        payload.cache_key = digest
    follower = state.hub.follow(rid)  # before the enqueue: no delta can come before we listen
    try:
        limits = await admit_sync(ctx, payload, timeout)
    except BaseException:
        state.hub.unfollow(follower)
        raise
    if limits is None or limits.refusal is not None:
        state.hub.unfollow(follower)
        if limits is None:
            return answers.error(_timeout(timeout), {"X-Gateway-Request-Id": rid})
        assert limits.refusal is not None
        if digest is not None:
            await abandon_lead(state, digest, rid, Outcome("failed", error_of(limits.refusal)))
        return answers.refusal(limits.refusal)
    reader = StreamReader(state, rid, follower, last_seq=0, streamed=True)
    return await _start(state, reader, payload.deadline_ms or now_ms(), timeout, fmt, answers, limits, counted=True)


async def _follow_leader(
    state: AppState, leader: str, deadline_ms: int, fmt: EventFormat, answers: StreamAnswers, rid: str
) -> Response:
    follower = state.hub.follow(leader)
    followed = await state.streams.follow(leader, state.waiter.channel, after_seq=0, tenant=None, count=True)
    reader = StreamReader(
        state, leader, follower, last_seq=0, streamed=followed.streamed if followed is not None else True
    )
    if followed is None:
        state.hub.unfollow(follower)
        return answers.error(_timeout(0), {"X-Gateway-Request-Id": leader})
    first = reader.take(followed)
    timeout = max(deadline_ms - now_ms(), 0) / 1000
    return await _start(state, reader, deadline_ms, timeout, fmt, answers, Admitted(), counted=True, first=first)


async def _start(
    state: AppState,
    reader: StreamReader,
    deadline_ms: int,
    timeout: float,
    fmt: EventFormat,
    answers: StreamAnswers,
    limits: Admitted,
    *,
    counted: bool,
    first: list[Event] | None = None,
) -> Response:
    """Wait for the stream's first events until the deadline, then answer: an error as the route
    answers errors, or the event stream."""
    rid = reader.request_id
    headers = {"X-Gateway-Request-Id": rid, **limits.headers}
    events = first or []
    while not events:
        remaining = (deadline_ms - now_ms()) / 1000
        got = await reader.next(remaining) if remaining > 0 else None
        if got is None:  # no event before the deadline: the client has its 504 and is gone
            await closer(state, reader, counted=counted, opened=False)(True)
            return answers.error(_timeout(timeout), headers | {"X-Gateway-Status-Url": _status_url(rid)})
        events = got
    end = events[0]
    if isinstance(end, End) and end.outcome.status != "succeeded":
        state.hub.unfollow(reader.follower)
        return answers.failed(end.outcome, rid)
    state.hub.opened()
    rest: AsyncGenerator[bytes, None] = live(reader, fmt) if not reader.ended else nothing()
    return EventStream(render(fmt, events), rest, headers, closer(state, reader, counted=counted))


def _replay(fmt: EventFormat, events: list[Event], rid: str) -> EventStream:
    async def done(_: bool) -> None:
        return None

    return EventStream(render(fmt, events), nothing(), {"X-Gateway-Request-Id": rid}, done)


def _status_url(rid: str) -> str:
    return f"/api/v1/llm/jobs/{rid}"


def _timeout(timeout: float) -> GatewayError:
    return GatewayError(
        ErrorType.TIMEOUT,
        f"no streamed answer began within {timeout:g}s; the request was stopped at that deadline (no provider"
        " call starts after it) and its record can be fetched",
        retryable=True,
    )
