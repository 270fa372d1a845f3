"""A client following a request's stream: from its first event (or the one after `Last-Event-ID`) to its
end, whichever API process it reaches, and what happens when it goes away.

Event ids are the deltas' seqs (1, 2, ...); the end (the request's outcome) is the seq after the last
delta. A request that did not stream upstream (an async job without `stream`, a cached answer) reads as
one delta with the whole content, then its end. Waiting between events, a comment line keeps proxies
from closing an idle connection, and the stream is read again from Redis, which also heals anything
missed while the process's subscription was down.

A synchronous stream's client that goes away is not followed by anyone after `STREAM_ABANDON_GRACE_S`
unless it (or another client) resumes it: the request is then abandoned, and its worker stops the
upstream call (shared/streams.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from api.sse import EventFormat
from api.state import AppState
from api.stream_hub import Follower, Resync
from shared.errors import ErrorType, GatewayError
from shared.queue import TERMINAL, Outcome
from shared.streams import Followed, StreamMessage

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 15.0
KEEP_ALIVE = b": keep-alive\n\n"
_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class Deltas:
    first_seq: int
    deltas: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class End:
    seq: int
    outcome: Outcome


Event = Deltas | End


class StreamReader:
    """One client's view of a request's stream: the events after the last one it has, in order, each
    once. `streamed`: the request streams upstream (else its content comes whole with its end)."""

    def __init__(self, state: AppState, request_id: str, follower: Follower, *, last_seq: int, streamed: bool) -> None:
        self.state = state
        self.request_id = request_id
        self.follower = follower
        self.last_seq = last_seq
        self.streamed = streamed
        self.ended = False

    def take(self, followed: Followed) -> list[Event]:
        """The events of a read of the stream (`Streams.follow`) after those already had."""
        events: list[Event] = []
        fresh = [(seq, data) for seq, data in followed.entries if seq > self.last_seq]
        if fresh:
            events.append(self._deltas(fresh[0][0], [orjson.loads(d) for _, d in fresh]))
        if followed.ended and followed.outcome is not None:
            events += self._end(followed.outcome)
        return events

    async def next(self, timeout_s: float | None) -> list[Event] | None:
        """The next events; None when `timeout_s` passes with none (the stream was read again from
        Redis meanwhile, in case something was missed)."""
        item = await self.follower.get(timeout_s)
        if item is None or isinstance(item, Resync):
            events = await self.catch_up()
            return events if events or item is not None else None
        if isinstance(item, StreamMessage):
            deltas: list[dict[str, Any]] = orjson.loads(item.deltas)
            start, end = item.first_seq, item.first_seq + len(deltas) - 1
            if end <= self.last_seq:
                return []  # had them already (read from Redis as this follower started)
            if start > self.last_seq + 1:
                return await self.catch_up()  # a gap: read the stream
            return [self._deltas(self.last_seq + 1, deltas[self.last_seq + 1 - start :])]
        return self._end(item)

    async def catch_up(self) -> list[Event]:
        followed = await self.state.streams.follow(
            self.request_id, self.state.waiter.channel, after_seq=self.last_seq, tenant=None, count=False
        )
        if followed is None:  # expired meanwhile
            return self._end(Outcome("failed", orjson.dumps(_gone(self.request_id).to_dict())))
        return self.take(followed)

    def _deltas(self, first_seq: int, deltas: list[dict[str, Any]]) -> Deltas:
        self.last_seq = first_seq + len(deltas) - 1
        return Deltas(first_seq, deltas)

    def _end(self, outcome: Outcome) -> list[Event]:
        if self.ended:
            return []
        self.ended = True
        if self.streamed:
            return [End(self.last_seq + 1, outcome)]
        # not streamed upstream: the whole content is event 1, the end event 2 (a failure: event 1)
        events: list[Event] = []
        succeeded = outcome.status == "succeeded"
        if succeeded and self.last_seq == 0:
            events.append(self._deltas(1, [{"c": outcome.json().get("content") or ""}]))
        end_seq = 2 if succeeded else 1
        if self.last_seq < end_seq:
            events.append(End(end_seq, outcome))
        self.last_seq = end_seq
        return events


def _gone(request_id: str) -> GatewayError:
    return GatewayError(ErrorType.NOT_FOUND, f"the stream of {request_id} is no longer kept", retryable=False)


def render(fmt: EventFormat, events: list[Event]) -> bytes:
    out = bytearray()
    for event in events:
        if isinstance(event, Deltas):
            if event.deltas:
                out += fmt.deltas(event.first_seq, event.deltas)
        else:
            out += fmt.end(event.seq, event.outcome)
    return bytes(out)


async def live(reader: StreamReader, fmt: EventFormat) -> AsyncGenerator[bytes, None]:
    """The rest of the stream, rendered, until its end; keep-alive comments while nothing comes."""
    while not reader.ended:
        events = await reader.next(KEEP_ALIVE_S)
        if events is None:
            yield KEEP_ALIVE
            continue
        # what arrived meanwhile leaves in the same write: a process behind catches up in fewer sends
        while reader.follower.pending and not reader.ended:
            events += await reader.next(0) or []
        if events:
            yield render(fmt, events)


async def nothing() -> AsyncGenerator[bytes, None]:
    """A stream's rest when its first part was all of it."""
    return
    yield  # an async generator with no items


def check_resume(followed: Followed, after_seq: int, request_id: str) -> None:
    """Refuse a `Last-Event-ID` the stream cannot continue from (400 beyond its end, 410 when the
    events after it were trimmed)."""
    if followed.deltas_expired and after_seq > 0:
        raise GatewayError(
            ErrorType.INVALID_REQUEST,
            f"the events of {request_id} are no longer kept (STREAM_KEEP_S); read it without Last-Event-ID",
            param="Last-Event-ID",
            status=410,
            retryable=False,
        )
    if followed.streamed and not followed.deltas_expired:
        last = followed.last_seq + (1 if followed.ended else 0)
        if followed.first_seq > after_seq + 1:
            raise GatewayError(
                ErrorType.INVALID_REQUEST,
                f"the events after {after_seq} are no longer kept (the stream holds {followed.first_seq} on)",
                param="Last-Event-ID",
                status=410,
                retryable=False,
            )
    else:
        last = (
            (2 if followed.outcome is not None and followed.outcome.status == "succeeded" else 1)
            if followed.ended
            else 0
        )
    if after_seq > last:
        raise GatewayError(
            ErrorType.INVALID_REQUEST,
            f"Last-Event-ID {after_seq} is beyond the end of the stream of {request_id}"
            f" (its last event so far: {last})",
            param="Last-Event-ID",
            retryable=False,
        )


def parse_last_event_id(raw: str | None) -> int:
    """The seq a client has (0: none); a malformed id is a 400."""
    if raw is None or raw.strip() == "":
        return 0
    value = raw.strip()
    if not value.isdigit() or len(value) > 12:
        raise GatewayError(
            ErrorType.INVALID_REQUEST,
            "Last-Event-ID must be the id of an event of this stream (a non-negative integer)",
            param="Last-Event-ID",
            retryable=False,
        )
    return int(value)


def closer(
    state: AppState, reader: StreamReader, *, counted: bool, opened: bool = True
) -> Callable[[bool], Awaitable[None]]:
    """What runs when a client stream ends (`EventStream.on_close`): the follower dropped, and a client
    that went away before the end leaves the stream (which may abandon it after the grace period).
    `opened`: the stream was counted open (`StreamHub.opened`)."""

    async def on_close(gone: bool) -> None:
        state.hub.unfollow(reader.follower)
        if opened:
            state.hub.closed()
        if gone and counted and not reader.ended:
            task = asyncio.get_running_loop().create_task(_leave(state, reader.request_id))
            _background.add(task)
            task.add_done_callback(_background.discard)

    return on_close


async def _leave(state: AppState, request_id: str) -> None:
    try:
        left, status, kind = await state.streams.leave(request_id)
        if left > 0 or kind != "sync" or status in TERMINAL or status is None:
            return
        await asyncio.sleep(state.settings.stream_abandon_grace_s)
        verdict = await state.streams.abandon(request_id)
        if verdict is not None:
            log.info("stream %s %s: its client went away and did not come back", request_id, verdict)
    except (RedisError, OSError) as exc:
        log.warning("a stream's client went away; the stream could not be abandoned (%s)", type(exc).__name__)
