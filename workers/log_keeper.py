"""The log keeper: keeps the Redis log stream bounded and, with `LOG_STORE_URL`, drains it into the log
store. Every worker process runs one; only the holder of a Redis lease works (as the health monitor).

Why in the workers and not a process of its own: every deployment already runs workers, several of
them, so the logs are kept with nothing more to deploy or supervise, and the lease moves to another
worker within `LEASE_S` (15 s) when its holder dies. Its cost is small and off the hot path (the
requests' own log write stays one XADD in their existing round trip): one XRANGE, one multi-row INSERT
and one XTRIM per second or per `LOG_WRITER_BATCH` entries, no JSON decoding (the store keeps the bytes).

Each run:
- with a store: read the oldest entries, insert them (idempotent: keyed by stream id), then trim
  exactly what was written and count it, in one transaction. A crash between insert and trim writes
  the batch again next time, which inserts nothing new. While the store is away the entries wait in
  the stream, whose cap (entries, bytes) then drops the oldest: counted as `dropped` (entries added to
  the stream, less entries written, less entries still there) and logged. Daily partitions past the
  retention are dropped once a minute.
- without: trim what is past the retention (the stream is the store).
- both: hold the stream under `LOG_REDIS_MAX_BYTES` (the XADD already holds it under
  `LOG_REDIS_MAX_ENTRIES`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared import keys
from shared.log_store import LogRow, PgLogStore
from shared.queue import now_ms
from shared.settings import Settings
from workers.lease import Lease

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
LEASE_S = 15.0
# Trimmed to a little under the byte cap, so that the next run does not find it over again at once.
BYTES_HEADROOM = 0.9


@dataclass(frozen=True, slots=True)
class BufferStats:
    entries: int
    bytes: int
    dropped: int  # with a store: entries the cap removed before they were written


class LogKeeper:
    def __init__(self, redis: Redis, settings: Settings, holder: str, store: PgLogStore | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.store = store
        self.key = keys.request_logs()
        self.retention_ms = int(settings.log_retention_days * 86_400_000)
        self.lease = Lease(redis, keys.log_writer_lease(), holder, LEASE_S, "log keeper")
        self.dropped = 0
        self._last_retention = 0.0
        self._store_down = False
        self._baselined = False

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, holder: str) -> LogKeeper:
        url = settings.log_store_url
        store = PgLogStore(url.get_secret_value(), retention_s=settings.log_retention_days * 86400) if url else None
        return cls(redis, settings, holder, store)

    def start(self) -> None:
        self.lease.start(self.run_once, self.settings.log_writer_interval_s, "log-keeper")

    async def stop(self) -> None:
        await self.lease.stop()
        if self.store is not None:
            await self.store.aclose()

    async def run_once(self, now: int | None = None) -> int:
        """One run (see the module's docstring); how many entries went to the store."""
        now = now_ms() if now is None else now
        written = 0
        if self.store is None:
            await self.redis.xtrim(self.key, minid=now - self.retention_ms, approximate=True)
        else:
            if not self._baselined:
                await self._baseline()
            written = await self._drain(self.store, now)
        await self._cap_bytes()
        if self.store is not None:
            await self._count_drops()
        return written

    async def _baseline(self) -> None:
        """Entries the stream held or dropped before there was a store count as neither written nor dropped."""
        with contextlib.suppress(ResponseError):  # no stream yet: nothing to count
            info = await self.redis.xinfo_stream(self.key)
            await self.redis.set(keys.request_logs_written(), int(info["entries-added"]) - int(info["length"]), nx=True)
        self._baselined = True

    async def _drain(self, store: PgLogStore, now: int) -> int:
        written = 0
        batch = self.settings.log_writer_batch
        while True:
            entries = await self.redis.xrange(self.key, "-", "+", count=batch)
            if not entries:
                break
            rows = [LogRow.of(raw_id.decode(), fields) for raw_id, fields in entries]
            try:
                await store.write(rows, now)
            except Exception as exc:  # whatever it is (down, refusing, disk full), the entries wait in Redis
                self._store_failed(exc)
                return written
            self._store_ok()
            last = rows[-1]
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xtrim(self.key, minid=f"{last.ms}-{last.seq + 1}", approximate=False)
                pipe.incrby(keys.request_logs_written(), len(rows))
                await pipe.execute()
            written += len(rows)
            if len(entries) < batch:
                break
        # retention runs with or without traffic, but not against a store known to be away
        if not self._store_down and time.monotonic() - self._last_retention >= RETENTION_EVERY_S:
            try:
                for name in await store.drop_expired(now):
                    log.info("log store: dropped partition %s (past the retention)", name)
            except Exception as exc:
                self._store_failed(exc)
                return written
            self._last_retention = time.monotonic()
        return written

    def _store_failed(self, exc: Exception) -> None:
        if not self._store_down:
            log.warning("log store unavailable (%s: %s): entries wait in Redis", type(exc).__name__, exc)
        self._store_down = True

    def _store_ok(self) -> None:
        if self._store_down:
            log.warning("log store back: writing the entries that waited")
        self._store_down = False

    async def _cap_bytes(self) -> None:
        used = await self.redis.memory_usage(self.key)
        if used is None or used <= self.settings.log_redis_max_bytes:
            return
        length = await self.redis.xlen(self.key)
        keep = int(length * self.settings.log_redis_max_bytes * BYTES_HEADROOM / used)
        await self.redis.xtrim(self.key, maxlen=keep, approximate=True)

    async def stats(self) -> BufferStats:
        """The stream's size and, with a store, how many entries its cap dropped unwritten."""
        try:
            info = await self.redis.xinfo_stream(self.key)
        except ResponseError:  # no stream yet
            return BufferStats(0, 0, 0)
        length = int(info["length"])
        written = int(await self.redis.get(keys.request_logs_written()) or 0)
        dropped = max(int(info["entries-added"]) - written - length, 0) if self.store is not None else 0
        return BufferStats(length, int(await self.redis.memory_usage(self.key) or 0), dropped)

    async def _count_drops(self) -> None:
        dropped = (await self.stats()).dropped
        if dropped > self.dropped:
            log.error(
                "log buffer full: %d entries dropped unwritten (%d in all); is the log store down?",
                dropped - self.dropped,
                dropped,
            )
        self.dropped = dropped
