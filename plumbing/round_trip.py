"""Redis commands from several parts of a process, sent together in one pipelined round trip.

After a provider call a worker has bookkeeping for the limits, the breaker, health, metrics and
logs; each part queues its commands on one `RoundTrip` and the processor sends them once. A round
trip costs a worker more CPU than most of the commands in it; on a lane
(`plumbing.redis_lane`, the workers') it is one write with no pool or retry layers around it, and its
replies are parsed as redis-py's pipeline parses them.

Scripts run by SHA (EVALSHA): a registered redis-py script on a pipeline would first ask Redis
whether it exists, one more round trip. A script Redis lost (a restart, SCRIPT FLUSH) answers
NOSCRIPT; `send` then runs that one command again with the script's source, after the rest of the
trip (bookkeeping commutes: counters, buckets, log entries).

Third-party internals touched (redis-py 5.x; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py):
- `Pipeline.command_stack` (read, copied and cleared: a trip on a lane sends the queued commands
  itself instead of `execute`);
- `redis.client.EMPTY_RESPONSE` and `NEVER_DECODE`, the option keys of a queued command;
- `Redis.response_callbacks`, to parse a lane's replies as `Redis.parse_response` would;
- `AsyncScript.sha`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from plumbing.interfaces import A, Aggregate
from plumbing.redis_lane import RedisLane, script_source

log = logging.getLogger(__name__)


class RoundTrip:
    """The concrete trip (`interfaces.Trip`): commands queued on a redis-py pipeline, sent on a lane
    or through the pipeline."""

    def __init__(self, redis: Redis, lane: RedisLane | None = None) -> None:
        """`lane`: the connection the trip goes on (see `plumbing.redis_lane`), instead of a pooled one;
        its commands are still queued on `pipe`, and their replies parsed as the pipeline would."""
        self.redis = redis
        self.lane = lane
        self.pipe = redis.pipeline(transaction=False)
        self._scripts: dict[int, AsyncScript | str] = {}  # command index -> the script it runs
        self._aggregates: dict[str, Aggregate] = {}

    def __len__(self) -> int:
        return len(self.pipe.command_stack)

    def script(self, script: AsyncScript | str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a Lua script (a registered one, or its source) by its SHA."""
        sha = script.sha if isinstance(script, AsyncScript) else hashlib.sha1(script.encode()).hexdigest()
        self._scripts[len(self)] = script
        self.pipe.evalsha(sha, len(keys), *keys, *args)

    def aggregate(self, key: str, make: Callable[[], A]) -> A:
        """The accumulator everything queued on this trip shares under `key`, made on first use. Its
        commands are queued once, after all the rest, just before the trip is sent: the counters of
        fifty requests ending together then cost one script call, not fifty. (Only for bookkeeping
        that commutes; its replies are not handed back, a failure is logged.)"""
        found = self._aggregates.get(key)
        if found is None:
            found = self._aggregates[key] = make()
        return found  # type: ignore[return-value]

    async def send(self) -> list[Any]:
        """Run everything queued, in order, then the aggregates; no round trip when nothing is.
        Replies come in the same order, a failed command's as its exception; a lost connection
        raises."""
        queued = len(self)
        for aggregate in self._aggregates.values():
            aggregate.flush(self)
        self._aggregates.clear()
        if not len(self):
            return []
        sent = list(self.pipe.command_stack)  # execute() empties it
        replies: list[Any]
        if self.lane is not None and not any(NEVER_DECODE in options for _, options in sent):
            self.pipe.command_stack.clear()
            raw = await self.lane.execute_many([args for args, _ in sent])
            replies = [
                await self._parsed(args[0], options, reply) for (args, options), reply in zip(sent, raw, strict=True)
            ]
        else:
            replies = await self.pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and i in self._scripts:
                args = sent[i][0]  # ("EVALSHA", sha, numkeys, *keys, *args)
                replies[i] = await self.redis.execute_command("EVAL", script_source(self._scripts[i]), *args[2:])  # type: ignore[no-untyped-call]
        self._scripts.clear()
        for reply in replies[queued:]:
            if isinstance(reply, Exception):
                log.warning("recording aggregated bookkeeping: a command failed (%s: %s)", type(reply).__name__, reply)
        return replies[:queued]

    async def _parsed(self, command: str | bytes, options: Mapping[str, Any], reply: Any) -> Any:
        """A reply as the pipeline hands it back (redis-py's `Redis.parse_response`): the command's
        reply callback applied, an error reply kept as its exception."""
        if isinstance(reply, ResponseError):
            return options.get(EMPTY_RESPONSE, reply)
        callback = self.redis.response_callbacks.get(command)
        if callback is None:
            return reply
        options = {k: v for k, v in options.items() if k not in (EMPTY_RESPONSE, "keys")}
        parsed = callback(reply, **options)
        return await parsed if inspect.isawaitable(parsed) else parsed

    async def send_or_log(self, what: str) -> None:
        """Send bookkeeping that must never fail the request it follows: failures are logged."""
        await logging_failures(self.send(), what)


async def logging_failures(sending: Awaitable[list[Any]], what: str) -> None:
    """Await a trip's replies; a lost connection or a failed command is logged, never raised."""
    try:
        replies = await sending
    except (RedisError, OSError) as exc:
        log.warning("could not record %s (%s)", what, type(exc).__name__)
        return
    for reply in replies:
        if isinstance(reply, Exception):
            log.warning("recording %s: a command failed (%s: %s)", what, type(reply).__name__, reply)
