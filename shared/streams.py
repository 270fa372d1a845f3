"""A streamed request's deltas through Redis: the worker relays them, API processes follow them.

The worker that holds a streamed request appends each batch of deltas (those one read of the provider's
answer completed) to the request's Redis Stream (`keys.stream`, entries `<seq>-0`) and publishes the
batch, in the same script, to the API processes following the request: on the channels its outcome
goes to (the record's reply channel, its watchers), so a following process needs no connection or
subscription of its own per stream. The stream's end is the request's outcome, stored and published
by the finish script as for every request, after the last relay.

A client that reconnects (`Last-Event-ID`) or follows later reads the stream after the seq it has
(`follow`), registered as a watcher in the same step, then the rest live: no gap, no duplicate, and no
second provider call. Each stream expires with the request's result (RESULT_TTL_S) and holds at most
STREAM_MAX_EVENTS entries (older ones are trimmed; resuming before them is refused).

A synchronous stream nobody follows any more is abandoned (`leave`, then `abandon` after a grace
period): the worker is told on its own channel and stops the upstream call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from plumbing.interfaces import Trip
from shared import keys, scripts
from shared.queue import TERMINAL, Outcome, now_ms

ABANDONED_BEFORE_START = Outcome(
    "cancelled",
    orjson.dumps({"type": "cancelled", "message": "the client went away before the stream started"}),
)
STREAM_CODE = b"S"  # a published message `<request id>|S|<first seq>|<deltas>` carries deltas
ABANDON_PREFIX = b"x|"  # on a worker's own channel: `x|<request id>`, stop that request's stream


@dataclass(frozen=True, slots=True)
class RelayVerdict:
    """What a relay found: whether the deltas went out, else why not."""

    code: int

    @property
    def sent(self) -> bool:
        return self.code == 1

    @property
    def abandoned(self) -> bool:
        """The client went away: stop the upstream call."""
        return self.code == -1

    @property
    def interrupted(self) -> bool:
        """An earlier worker relayed part of this stream and died: it cannot be continued."""
        return self.code == -2

    @property
    def not_ours(self) -> bool:
        """The request is no longer this worker's (its lease lapsed and another worker retook it)."""
        return self.code == 0


class StreamRelay:
    """One streamed request's relay, in the worker: numbers its deltas and queues each batch's relay on
    a round trip (batches of several requests ending up in the same loop iteration share one)."""

    def __init__(self, request_id: str, worker: str, *, ttl_s: int, max_events: int) -> None:
        self.request_id = request_id
        self.worker = worker
        self.ttl_s = ttl_s
        self.max_events = max_events
        self.sent = 0  # deltas relayed so far
        self._record = keys.request(request_id)
        self.stream_key = keys.stream(request_id)
        self._watchers = keys.watchers(request_id)
        self._prefix = request_id.encode() + b"|" + STREAM_CODE + b"|"

    def relay_into(self, trip: Trip, script: Any, deltas: list[bytes]) -> None:
        """Queue the relay of `deltas` (each an encoded delta) on `trip`; `relayed` reads its reply."""
        script_keys, args = scripts.stream_relay(
            record=self._record,
            stream=self.stream_key,
            watchers=self._watchers,
            worker=self.worker,
            first_seq=self.sent + 1,
            ttl_s=self.ttl_s,
            max_events=self.max_events,
            message_prefix=self._prefix,
            deltas=deltas,
        )
        trip.script(script, script_keys, args)

    def relayed(self, reply: Any, count: int) -> RelayVerdict:
        verdict = RelayVerdict(int(reply))
        if verdict.sent:
            self.sent += count
        return verdict


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """A batch of deltas as published: the seq of its first delta and the deltas' JSON array."""

    first_seq: int
    deltas: bytes

    @classmethod
    def parse(cls, body: bytes) -> StreamMessage:
        """`body`: what follows `<request id>|S|` in the published message."""
        first, _, deltas = body.partition(b"|")
        return cls(int(first), deltas)


@dataclass(frozen=True, slots=True)
class Followed:
    """What `follow` read: the request's status (and outcome once it ended), whether it streams, its
    kind, the first and last seq the stream holds (0: none), and its deltas after the seq asked for,
    as (seq, encoded delta) pairs."""

    status: str
    outcome: Outcome | None
    streamed: bool
    kind: str
    first_seq: int
    last_seq: int
    entries: list[tuple[int, bytes]]
    model: str = ""
    created_ms: int = 0

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    @property
    def deltas_expired(self) -> bool:
        """A streamed request that ended and whose deltas are no longer kept (STREAM_KEEP_S): it reads
        as a request that did not stream, its whole answer one delta."""
        return self.streamed and self.ended and self.last_seq == 0


class Streams:
    """The API side of streams: follow, leave and abandon (one script each)."""

    def __init__(self, redis: Redis, *, watch_ttl_s: int, record_ttl_s: int) -> None:
        self.redis = redis
        self.watch_ttl_s = watch_ttl_s
        self.record_ttl_s = record_ttl_s
        self._follow = redis.register_script(scripts.STREAM_FOLLOW.source)
        self._leave = redis.register_script(scripts.STREAM_LEAVE.source)
        self._abandon = redis.register_script(scripts.STREAM_ABANDON.source)

    async def follow(
        self, request_id: str, channel: str, *, after_seq: int, tenant: str | None, count: bool
    ) -> Followed | None:
        """Start following a request's stream on `channel` (see stream_follow.lua); None if there is no
        such request of `tenant`'s (None: any tenant's)."""
        raw = await self._follow(
            *scripts.stream_follow(
                record=keys.request(request_id),
                stream=keys.stream(request_id),
                watchers=keys.watchers(request_id),
                channel=channel,
                watch_ttl_s=self.watch_ttl_s,
                tenant=tenant or "",
                after_seq=after_seq,
                count=count,
            )
        )
        if not raw or raw[0] is None:
            return None
        status, result, streamed, kind, first, last, entries, model, created = raw
        return Followed(
            status=status.decode(),
            outcome=Outcome.parse(result) if result else None,
            streamed=bool(streamed),
            kind=kind.decode() if kind else "sync",
            first_seq=int(first),
            last_seq=int(last),
            entries=[(int(entry_id.split(b"-", 1)[0]), fields[1]) for entry_id, fields in entries],
            model=model.decode() if model else "",
            created_ms=int(created) if created else 0,
        )

    async def leave(self, request_id: str) -> tuple[int, str | None, str | None]:
        """A follower went away: the followers left, the request's status and kind."""
        left, status, kind = await self._leave(*scripts.stream_leave(record=keys.request(request_id)))
        return int(left), (status.decode() if status else None), (kind.decode() if kind else None)

    async def abandon(self, request_id: str) -> str | None:
        """Give up a synchronous stream nobody follows (see stream_abandon.lua): 'cancelled' (it was
        still queued), 'abandoned' (its worker stops the upstream call), or None (it ended meanwhile,
        or a client came back)."""
        raw = await self._abandon(
            *scripts.stream_abandon(
                record=keys.request(request_id),
                watchers=keys.watchers(request_id),
                request_id=request_id,
                stored=ABANDONED_BEFORE_START.encode(),
                finished_ms=now_ms(),
                record_ttl_s=self.record_ttl_s,
                job_prefix=keys.arq_job(""),
            )
        )
        return {2: "cancelled", 1: "abandoned"}.get(int(raw))


# Each API process writes its count of open client streams every OPEN_STREAMS_EVERY_S while it has
# any (and once more when it drops to none); a count not refreshed within OPEN_STREAMS_FRESH_MS is a
# process that is gone.
OPEN_STREAMS_EVERY_S = 1.0
OPEN_STREAMS_FRESH_MS = 10_000


def open_streams_entry(count: int, now_ms: int) -> bytes:
    return f"{count}:{now_ms}".encode()


def open_streams(raw: Mapping[bytes, bytes], now_ms: int) -> int:
    """The client streams open across the API processes, from `keys.streams_open()`'s hash."""
    total = 0
    for value in raw.values():
        count, _, at = value.partition(b":")
        if at and now_ms - int(at) <= OPEN_STREAMS_FRESH_MS:
            total += int(count)
    return total
