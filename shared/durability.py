"""What an acknowledgement survives when Redis crashes (REDIS_DURABILITY), and what the gateway does
for each mode. An acknowledgement is a 202 of an async job, a batch's acceptance, and the enqueue of a
synchronous request (its caller then waits for the answer on that enqueue).

- `everysec` (default): Redis writes its append-only file (AOF) and fsyncs it once a second. A
  restart of Redis (a crash included) keeps everything older than about a second; a crash (SIGKILL,
  OOM killer, the machine losing power) may lose what was acknowledged in the last second or so.
- `always`: the AOF is fsynced before Redis answers a write, so nothing acknowledged is lost by a
  crash of Redis or of its machine (as far as the disk honours fsync). Each write costs a disk sync.
- `replica`: an acknowledgement is given only once one replica has the write (`WAIT 1 <ms>`, sent
  on the same connection right after the write, in the same packet): a crash of the primary followed
  by a failover to that replica (Sentinel) loses nothing acknowledged. What no replica confirms within
  REDIS_REPLICA_WAIT_MS gets a 503 (`service_unavailable`, retryable) and its request is cancelled if
  no worker has started it yet. Redis replication is asynchronous and in order, so a replica that has
  a write has everything written before it (a batch's staged items before its activation).

For `everysec` and `always` the gateway checks at start-up what Redis runs (`appendonly`,
`appendfsync`) and says what it found; with REDIS_DURABILITY_APPLY it sets them when they are weaker
than the mode (CONFIG SET, where the server allows it). For `replica` it reports the primary's
connected replicas. The check never lowers what Redis runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import ErrorType, GatewayError
from shared.settings import DurabilityMode, Settings

log = logging.getLogger(__name__)

# appendfsync policies, weakest first; "none" stands for appendonly no
_FSYNC_STRENGTH = {"none": 0, "no": 1, "everysec": 2, "always": 3}


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """`replica` mode's confirmation: WAIT for `replicas` replicas, at most `timeout_ms`."""

    replicas: int
    timeout_ms: int

    @property
    def command(self) -> tuple[str, int, int]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def confirmed(self, acked: int) -> bool:
        return int(acked) >= self.replicas

    def refusal(self, what: str, request_id: str | None = None, *, cancelled: bool = True) -> GatewayError:
        """The 503 of an acknowledgement no replica confirmed in time."""
        fate = "it was not accepted" if cancelled else f"it may still run: request {request_id}"
        return GatewayError(
            ErrorType.SERVICE_UNAVAILABLE,
            f"no Redis replica confirmed the {what} within {self.timeout_ms} ms (REDIS_DURABILITY=replica);"
            f" {fate}; retry shortly",
            retry_after=1,
        )


def replica_wait(settings: Settings) -> ReplicaWait | None:
    """The confirmation acknowledgements wait for; None (the default path: nothing added) unless `replica`."""
    if settings.redis_durability != "replica":
        return None
    return ReplicaWait(1, settings.redis_replica_wait_ms)


async def check_redis(redis: Redis, mode: DurabilityMode, *, apply: bool) -> str:
    """What Redis runs against what `mode` needs, said in the log (and returned); with `apply`, the
    AOF raised to the mode where Redis is weaker and lets us. Never raises: a Redis that cannot be
    asked is reported as such."""
    try:
        report, held = await _check(redis, mode, apply=apply)
    except RedisError as exc:
        report, held = f"REDIS_DURABILITY={mode}: Redis could not be checked ({type(exc).__name__}: {exc})", False
    log.log(logging.INFO if held else logging.WARNING, "%s", report)
    return report


async def _check(redis: Redis, mode: DurabilityMode, *, apply: bool) -> tuple[str, bool]:
    found = await redis.config_get("append*")
    aof = _text(found.get(b"appendonly", found.get("appendonly", "no")))
    fsync = _text(found.get(b"appendfsync", found.get("appendfsync", "everysec"))) if aof == "yes" else "none"
    runs = f"Redis runs appendonly {aof}" + (f", appendfsync {fsync}" if aof == "yes" else "")
    if mode == "replica":
        info = await redis.info("replication")
        replicas = int(info.get("connected_slaves", 0))
        held = replicas >= 1
        return f"REDIS_DURABILITY=replica: {replicas} connected replica(s); {runs}", held
    if _FSYNC_STRENGTH[fsync] >= _FSYNC_STRENGTH[mode]:
        return f"REDIS_DURABILITY={mode}: held ({runs})", True
    if not apply:
        return f"REDIS_DURABILITY={mode}: NOT held ({runs}; set REDIS_DURABILITY_APPLY=true or configure Redis)", False
    try:
        await redis.config_set("appendfsync", mode)
        await redis.config_set("appendonly", "yes")
    except RedisError as exc:
        return f"REDIS_DURABILITY={mode}: NOT held ({runs}; CONFIG SET refused: {exc})", False
    return f"REDIS_DURABILITY={mode}: set (it found: {runs}; now appendonly yes, appendfsync {mode})", True


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
