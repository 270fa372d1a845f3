"""The plumbing's public interfaces: what the domain types against instead of the concrete classes.

The domain queues its Redis commands on a `Trip`, has trips sent by a `TripSender`, runs a hot
script through a `ScriptRunner`, and calls providers through `httpx.AsyncBaseTransport` (with
`plumbing.http_call.whole_answer_call`). Which connection, pipeline or transport is behind them is
chosen once, where a process is put together (`api/app.py`, `workers/runtime.py`). These are
`typing.Protocol`s: they cost nothing at run time.

Third-party internals touched: none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript


class Aggregate(Protocol):
    def flush(self, trip: Trip) -> None:
        """Queue the aggregate's commands on `trip` (called once, just before it is sent)."""
        ...


A = TypeVar("A", bound=Aggregate)


class Trip(Protocol):
    """A round trip being filled: Redis commands of several parts of a process, sent together once
    by its owner (a `TripSender`); replies come back in the order queued."""

    @property
    def pipe(self) -> Pipeline:
        """Where plain commands are queued (redis-py's pipeline API); they go out with the trip."""
        ...

    def script(self, script: AsyncScript | str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a Lua script (a registered one, or its source), run by its SHA."""
        ...

    def aggregate(self, key: str, make: Callable[[], A]) -> A:
        """The accumulator everything queued on this trip shares under `key` (made on first use),
        flushed once after the rest, just before the trip is sent."""
        ...


Fill = Callable[[Trip], None]


class TripSender(Protocol):
    """Sends the commands a caller queues (`fill`) in a round trip, possibly shared with other callers."""

    async def send(self, fill: Fill) -> list[Any]:
        """`fill`'s replies, in order (a failed command's as its exception); a lost connection raises."""
        ...

    async def send_or_log(self, fill: Fill, what: str) -> None:
        """For bookkeeping that must never fail the request it follows: failures are logged."""
        ...


class ScriptRunner(Protocol):
    """Runs a registered Lua script now, on a connection of its own choosing."""

    async def evalsha(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply (an error reply raises, as in redis-py)."""
        ...

    async def evalsha_and(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], command: Sequence[Any]
    ) -> tuple[Any, Any]:
        """The script's reply and that of `command`, sent right after it on the same connection."""
        ...


Headers = list[tuple[bytes, bytes]]


class WholeAnswerCall(Protocol):
    """One HTTP call answered whole: status, raw headers and the body, content-decoded."""

    async def __call__(
        self, method: str, url: httpx.URL, headers: Headers, content: bytes | None, timeouts: Mapping[str, float | None]
    ) -> tuple[int, Headers, bytes]: ...


@runtime_checkable
class AnswersWhole(Protocol):
    """A transport with a direct path for whole answers, skipping httpx's Request and Response objects."""

    async def call_whole(
        self, method: str, url: httpx.URL, headers: Headers, content: bytes | None, timeouts: Mapping[str, float | None]
    ) -> tuple[int, Headers, bytes]: ...
