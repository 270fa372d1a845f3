"""The log store: the request, response and error logs in PostgreSQL (`LOG_STORE_URL`), for the SPEC's
30 days of searchable logs at rates Redis should not hold (docs/log_store.md).

One table, range-partitioned by day on the entry's millisecond timestamp; retention drops whole
partitions (no row-by-row DELETE, no bloat, no VACUUM debt). A row is keyed by its Redis stream id
(`ms`, `seq`), which is unique and ordered: an insert that meets a row already there does nothing, so
the writer may write a batch again after a crash between its write and its trim of the stream
(at-least-once delivery, exactly-once rows). Reads take the same filters and give the same pages as
the stream (shared/request_log.py), cursors included: a cursor is the last id of the previous page.

The entry is kept as `json`, the bytes the stream held: what `/logs` shows is exactly what was logged
(key order too), and a caller's `\\u0000`, which `jsonb` refuses, cannot wedge the writer on one row.
The columns the filters use (type, provider, time) are indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis

from shared.errors import ErrorType, GatewayError
from shared.request_log import MAX_READ, LogPage, LogReader, RequestLog, entry_view
from shared.settings import Settings

log = logging.getLogger(__name__)

TABLE: Final = "request_logs"
DAY_MS: Final = 86_400_000
BIGINT_MAX: Final = 2**63 - 1  # the route takes stream ids up to 2**64 - 1; nothing lies beyond this

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
  ms bigint NOT NULL,
  seq bigint NOT NULL,
  type text NOT NULL,
  provider text NOT NULL,
  data json NOT NULL,
  PRIMARY KEY (ms, seq)
) PARTITION BY RANGE (ms);
CREATE INDEX IF NOT EXISTS {TABLE}_type ON {TABLE} (type, ms, seq);
CREATE INDEX IF NOT EXISTS {TABLE}_provider ON {TABLE} (provider, ms, seq);
"""

INSERT: Final = f"""
INSERT INTO {TABLE} (ms, seq, type, provider, data)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::json[])
ON CONFLICT DO NOTHING
"""

PARTITIONS: Final = f"""
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = '{TABLE}'::regclass
"""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One stream entry as the store keeps it."""

    ms: int
    seq: int
    type: str
    provider: str
    data: str

    @classmethod
    def of(cls, entry_id: str, fields: dict[bytes, bytes]) -> LogRow:
        ms, _, seq = entry_id.partition("-")
        return cls(
            int(ms),
            int(seq),
            fields.get(b"t", b"").decode(),
            fields.get(b"p", b"").decode(),
            fields.get(b"d", b"{}").decode(),
        )


def day_of(ms: int) -> int:
    """The UTC day (in epoch days) an entry's partition covers."""
    return ms // DAY_MS


def partition_name(day: int) -> str:
    return f"{TABLE}_p{(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)):%Y%m%d}"


def partition_day(name: str) -> int | None:
    stamp = name.removeprefix(f"{TABLE}_p")
    try:
        return (datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    except ValueError:
        return None


class PgLogStore:
    """The logs in PostgreSQL. The pool is made on first use (and again after a failure to make it), so a
    database that is down when a process starts delays nothing but the logs."""

    def __init__(self, url: str, *, retention_s: float, pool_size: int = 2, timeout_s: float = 10.0) -> None:
        self.url = url
        self.retention_ms = int(retention_s * 1000)
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._days: set[int] = set()  # partitions known to exist

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    # min_size 0: no background reconnects (and their logged tracebacks) while the
                    # database is away; a connection is made when asked for, then kept
                    pool = await asyncpg.create_pool(
                        self.url, min_size=0, max_size=self.pool_size, timeout=self.timeout_s
                    )
                    async with pool.acquire() as conn:
                        await conn.execute(SCHEMA)
                    self._pool = pool
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _ensure_partitions(self, conn: asyncpg.Connection, days: set[int]) -> None:
        for day in sorted(days - self._days):
            low = day * DAY_MS
            # DuplicateTableError: made by another writer between our check and our create
            with contextlib.suppress(asyncpg.DuplicateTableError):
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE}"
                    f" FOR VALUES FROM ({low}) TO ({low + DAY_MS})"
                )
            self._days.add(day)

    async def write(self, rows: Sequence[LogRow], now_ms: int) -> int:
        """Insert the rows not past the retention (a row already there is left as it is); how many were new."""
        keep = [r for r in rows if r.ms >= now_ms - self.retention_ms]
        if not keep:
            return 0
        pool = await self.pool()
        async with pool.acquire() as conn:
            await self._ensure_partitions(conn, {day_of(r.ms) for r in keep})
            try:
                return await self._insert(conn, keep)
            except asyncpg.CheckViolationError:
                # "no partition of relation found for row": one we knew of was dropped by hand
                self._days.clear()
                await self._ensure_partitions(conn, {day_of(r.ms) for r in keep})
                return await self._insert(conn, keep)
            except asyncpg.DataError:
                # a row the database refuses must not hold back the rest of the stream for good
                return await self._insert_one_by_one(conn, keep)

    async def _insert(self, conn: asyncpg.Connection, rows: Sequence[LogRow]) -> int:
        status: str = await conn.execute(
            INSERT,
            [r.ms for r in rows],
            [r.seq for r in rows],
            [r.type for r in rows],
            [r.provider for r in rows],
            [r.data for r in rows],
            timeout=self.timeout_s,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_one_by_one(self, conn: asyncpg.Connection, rows: Sequence[LogRow]) -> int:
        written = 0
        for row in rows:
            try:
                written += await self._insert(conn, [row])
            except asyncpg.DataError as exc:
                log.error("log entry %s-%s refused by the log store, skipped: %s", row.ms, row.seq, exc)
        return written

    async def drop_expired(self, now_ms: int) -> list[str]:
        """Drop the partitions whose every row is past the retention; their names."""
        cutoff_day = day_of(now_ms - self.retention_ms)  # partitions of days before this one are wholly past
        pool = await self.pool()
        dropped: list[str] = []
        async with pool.acquire() as conn:
            for record in await conn.fetch(PARTITIONS):
                name: str = record["relname"]
                day = partition_day(name)
                if day is not None and day < cutoff_day:
                    await conn.execute(f"DROP TABLE IF EXISTS {name}")
                    self._days.discard(day)
                    dropped.append(name)
        return dropped

    async def count(self) -> int:
        pool = await self.pool()
        async with pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))

    async def read(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        kind: str | None = None,
        provider: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now_ms: int | None = None,
    ) -> LogPage:
        """As `RequestLog.read`: entries in [start, end] oldest first, filtered; `next_cursor` resumes."""
        now = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
        oldest = max(now - self.retention_ms, 0)
        limit = max(1, min(limit, MAX_READ))
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if cursor:
            ms, _, seq = cursor.partition("-")
            after = (min(int(ms), BIGINT_MAX), min(int(seq), BIGINT_MAX))
            where.append(f"(ms, seq) > ({arg(after[0])}, {arg(after[1])}) AND ms >= {arg(oldest)}")
        else:
            where.append(f"ms >= {arg(min(max(start_ms or 0, oldest), BIGINT_MAX))}")
        if end_ms is not None:
            where.append(f"ms <= {arg(min(end_ms, BIGINT_MAX))}")
        if kind:
            where.append(f"type = {arg(kind)}")
        if provider:
            where.append(f"provider = {arg(provider)}")
        query = (
            f"SELECT ms, seq, data::text AS data FROM {TABLE} WHERE {' AND '.join(where)}"
            f" ORDER BY ms, seq LIMIT {arg(limit)}"
        )
        try:
            pool = await self.pool()
            async with pool.acquire() as conn:
                records = await conn.fetch(query, *args, timeout=self.timeout_s)
        except Exception as exc:  # down, refusing, timed out: the caller is told so, not a 500
            raise GatewayError(
                ErrorType.SERVICE_UNAVAILABLE,
                f"the log store is unreachable ({type(exc).__name__}); retry shortly",
                retry_after=1,
            ) from exc
        entries = [entry_view(f"{r['ms']}-{r['seq']}", r["data"]) for r in records]
        return LogPage(entries, entries[-1]["id"] if len(entries) >= limit else None)


def log_reader(redis: Redis, settings: Settings) -> LogReader:
    """Where `/logs` reads: the log store when `LOG_STORE_URL` is set, else the Redis stream."""
    url = settings.log_store_url
    if url is None:
        return RequestLog.from_settings(redis, settings)
    return PgLogStore(url.get_secret_value(), retention_s=settings.log_retention_days * 86400)
