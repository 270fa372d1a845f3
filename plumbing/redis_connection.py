"""Redis connections built from settings, with timeouts that fail fast instead of hanging.

Where the Redis is: a URL (`redis://`, `rediss://` with a CA file for a managed Redis over TLS,
`unix://`), or Sentinels that name the current primary (`RedisAddress.sentinels`): every new
connection then asks a Sentinel where the primary is, so a failover is followed without a restart
(connections to the old primary break, or are refused with READONLY once it is a replica, and the
next one goes to the new primary). A READONLY reply always ends its connection: the gateway only
ever wants the primary.

Commands are packed in C by hiredis (which already parses the replies): redis-py's asyncio
connection packs them in Python, argument by argument, and a worker's request sends about 150
arguments (redis-py's own sync connection packs with hiredis too).

Per-command costs of redis-py 5's asyncio connection taken out (arq pins redis < 6):
- it writes each command under `asyncio.wait_for`, which in Python 3.11 runs the write in a new task,
  so the command leaves only on the event loop's next turn; here it is written at once, and only
  bytes the socket did not take at once are waited for (within the socket timeout);
- it arms a timer for every reply, also for the replies of a pipeline that arrived with the first;
  here a reply already received is taken at once.
The pool's own check of a connection before use (a zero-timeout read) stays: a connection given
back mid-command may still have a reply on its way, which only a read can catch. The first change
takes an event-loop turn off every Redis round trip on the critical path.

Third-party internals touched (redis-py 5.x, hiredis; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py):
- `redis._parsers.hiredis` (a private module): `_AsyncHiredisParser`, `NOT_ENOUGH_DATA`, and the
  parser's `_connected` and `_reader` (hiredis's `Reader`, whose `gets` is called directly);
- `redis.connection.HiredisRespSerializer` (undocumented) and its `pack`;
- `redis.asyncio.connection.AbstractConnection`, subclassed: `pack_command`, `pack_commands`,
  `send_packed_command` and `read_response` (with its `disconnect_on_error` and `push_request`
  keywords) overridden; its `_writer`, `_parser`, `is_connected`, `connect`, `check_health`,
  `disconnect(nowait=)`, `socket_timeout`, `health_check_interval` and `next_health_check` used;
- `ConnectionPool.connection_class`, replaced after the client is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_PACKER = HiredisRespSerializer()


class HiredisPacking(AbstractConnection):
    """A connection (TCP, TLS or Unix socket: mixed in before it) that packs commands with hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = _PACKER.pack(*args)
        return packed

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        """redis-py's, with the write made at once (see the module doc) and the same errors."""
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = self._writer
        assert writer is not None
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():  # not all of it went out: wait, within the timeout
                async with asyncio.timeout(self.socket_timeout):
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {e}") from e
        except BaseException:
            await self.disconnect(nowait=True)  # a partly sent command leaves the connection unusable
            raise

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        """A reply already received (a pipeline's replies come together) is taken as redis-py's read
        would take it, without arming a timer for it; anything else is redis-py's read."""
        parser = self._parser
        if isinstance(parser, _AsyncHiredisParser) and parser._connected and parser._reader is not None:
            response = parser._reader.gets(False) if disable_decoding else parser._reader.gets()
            if response is not NOT_ENOUGH_DATA:
                return await self._received(response, disconnect_on_error)
        try:
            return await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        except ReadOnlyError:
            raise await self._on_a_replica() from None

    async def _on_a_replica(self) -> RedisConnectionError:
        """READONLY: this connection reaches a replica (a failover demoted its server). It is closed, so
        that the next one finds the primary (through Sentinel), and the command fails as on a lost
        connection (nothing was written: redis-py's retry may send it again)."""
        await self.disconnect(nowait=True)
        return RedisConnectionError("Redis answered READONLY: the connection reached a replica")

    async def _received(self, response: Any, disconnect_on_error: bool) -> Any:
        """What redis-py's parser and connection do with a reply once it is parsed."""
        broken = response[0] if isinstance(response, list) and response else response
        if isinstance(broken, RedisConnectionError):
            if disconnect_on_error:
                await self.disconnect(nowait=True)
            raise broken
        if self.health_check_interval:
            self.next_health_check = asyncio.get_running_loop().time() + self.health_check_interval
        if isinstance(response, ReadOnlyError):
            raise await self._on_a_replica() from None
        if isinstance(response, ResponseError):
            raise response from None
        return response


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if connection_class not in _PACKING:
        name = f"HiredisPacking{connection_class.__name__}"
        _PACKING[connection_class] = type(name, (HiredisPacking, connection_class), {})
    return _PACKING[connection_class]


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where the gateway's Redis is. `url`: the Redis itself, or with `sentinels` only its
    credentials, database and scheme (`rediss://`: TLS), the primary's address coming from the
    Sentinels that watch `master`. `ca_file`: the authority a TLS server's certificate must chain to
    (also `?ssl_ca_certs=` in the URL)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    ca_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")


def parse_hosts(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (also `[v6]:port`), as REDIS_SENTINELS gives it."""
    hosts = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return tuple(hosts)


def connect(
    address: RedisAddress | str,
    *,
    max_connections: int = 200,
    socket_timeout: float | None = 5.0,
    cls: type[Redis] = Redis,
) -> Redis:
    if isinstance(address, str):
        address = RedisAddress(address)
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if address.ca_file:
        if not address.tls:
            raise ValueError("a CA file (REDIS_CA_FILE) needs a rediss:// URL")
        options["ssl_ca_certs"] = address.ca_file
    client = _via_sentinels(address, cls, options) if address.sentinels else cls.from_url(address.url, **options)
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return client


def _via_sentinels(address: RedisAddress, cls: type[Redis], options: dict[str, Any]) -> Redis:
    """A client of the primary the Sentinels name: each new connection asks them where it is."""
    url_options: dict[str, Any] = dict(parse_url(address.url))
    for ignored in ("host", "port", "path"):  # the Sentinels say where; the URL says how
        url_options.pop(ignored, None)
    tls = url_options.pop("connection_class", None) is SSLConnection
    # a Sentinel that does not answer within a second is skipped for the next one
    quick = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    sentinels = Sentinel(list(address.sentinels), sentinel_kwargs=quick)  # type: ignore[no-untyped-call]
    client: Redis = sentinels.master_for(address.master, redis_class=cls, ssl=tls, **url_options, **options)
    return client
