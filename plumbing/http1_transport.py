"""httpx's transport for provider calls: HTTP/1.1 keep-alive connections on asyncio, parsed by httptools.

A provider call is one small request and one JSON answer on a kept-alive connection. At one call at
a time, aiohttp under httpx (`aiohttp_transport.py`) took measurably more per call than a bare asyncio
protocol, and httpx's own transport more still (bench/README.md); this one is that
bare protocol behind httpx's interface: the request goes out in one write, httptools (llhttp, the
parser uvicorn serves with) reads the answer, and httpx gets it whole as content (httpx decodes any
Content-Encoding, as it would for its own transport). A provider call skips httpx's Request and
Response objects altogether through `call_whole` (`plumbing.http_call`), the same call with the
headers and body as bytes.

It keeps httpx's contract: its `Limits` (connections in use, kept-alive connections and their
expiry), its four timeouts (connect includes TLS; read bounds each wait for bytes, as httpx's does),
its exceptions. What it leaves out: HTTP/2, proxies (a provider behind a proxy the environment names
is called through httpx's own transport: `workers/provider_client.build_transport`), HEAD requests (no provider
call uses them). An answer with neither a length nor chunks ends when the server closes (RFC 9112
6.3). A request is never sent twice: a kept-alive connection the server closed as it was reused
fails the call with `RemoteProtocolError`, which the provider client maps to a retryable error, as
httpx's does; one it closed before (its close unread while the loop was busy) is not reused.

Third-party internals touched: none (httptools' parser and httpx's public types and exceptions).
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import httpx

_READ_LIMIT = 64 * 1024 * 1024  # the largest answer taken (a provider answer is kilobytes)


class Http1Transport(httpx.AsyncBaseTransport):
    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._max_connections = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[bytes, bytes, int], collections.deque[_Connection]] = {}
        self._idle_count = 0
        self._in_use = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = await request.aread()
        answer = await self.exchange(
            request.method.encode(),
            request.url,
            request.headers.raw,
            content,
            request.extensions.get("timeout", {}),
            request=request,
            sni=request.extensions.get("sni_hostname"),
        )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1", "reason_phrase": answer.reason}
        return httpx.Response(
            answer.status, headers=answer.headers, content=answer.body, request=request, extensions=extensions
        )

    async def exchange(
        self,
        method: bytes,
        url: httpx.URL,
        headers: Iterable[tuple[bytes, bytes]],
        content: bytes,
        timeouts: Mapping[str, float | None],
        *,
        request: httpx.Request | None = None,
        sni: str | None = None,
    ) -> Answer:
        """One call whose headers are complete (Host and Content-Length included), answered whole and
        still content-encoded: `handle_async_request` without httpx's Request and Response objects,
        which cost a provider call more than the rest of its client side (`call_whole`).
        `request`, if any, is named in the errors raised."""
        if method == b"HEAD":
            raise httpx.UnsupportedProtocol("HEAD is not supported by this transport", request=request)
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        head = [b"%s %s HTTP/1.1\r\n" % (method, url.raw_path)]
        head += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        message = b"".join(head) + b"\r\n" + content
        await self._take_slot(timeouts.get("pool"), request)
        try:
            conn = await self._connection(url, request, sni, timeouts.get("connect"))
            answer = await conn.exchange(message, request, timeouts.get("write"), timeouts.get("read"))
        finally:
            self._give_slot()
        if answer.keep_alive and not (self._closed or conn.lost):
            self._keep(conn)
        else:
            conn.close()
        return answer

    async def call_whole(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        content: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One call answered whole (`interfaces.AnswersWhole`): status, raw headers and the body,
        content-decoded. Without httpx's Request and Response objects, with the
        headers httpx's Request adds; only an encoded answer takes an httpx Response, to decode it
        as httpx would."""
        headers = [(b"Host", url.netloc), *headers]
        if content or method in ("POST", "PUT", "PATCH"):
            headers.append((b"Content-Length", b"%d" % len(content or b"")))
        answer = await self.exchange(method.encode(), url, headers, content or b"", timeouts)
        body = answer.body
        if any(name.lower() == b"content-encoding" for name, _ in answer.headers):
            body = httpx.Response(answer.status, headers=answer.headers, content=body).content
        return answer.status, answer.headers, body

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle_count = 0

    async def _take_slot(self, timeout: float | None, request: httpx.Request | None) -> None:
        """One of `max_connections` calls in flight (httpx's pool limit), waiting up to the pool timeout;
        a slot given back goes straight to the longest waiter."""
        if self._max_connections is None or self._in_use < self._max_connections:
            self._in_use += 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(handed)
        try:
            async with asyncio.timeout(timeout):
                await handed
        except BaseException as exc:
            if handed.done() and not handed.cancelled():
                self._give_slot()  # handed over just as we gave up: pass it on
            else:
                handed.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no connection came free within the pool timeout", request=request) from None
            raise

    def _give_slot(self) -> None:
        while self._waiting:
            handed = self._waiting.popleft()
            if not handed.done():
                handed.set_result(None)  # the slot changes hands: still in use
                return
        self._in_use -= 1

    async def _connection(
        self, url: httpx.URL, request: httpx.Request | None, sni_hostname: str | None, timeout: float | None
    ) -> _Connection:
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        idle = self._idle.get(origin)
        loop = asyncio.get_running_loop()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.reusable(loop.time()):
                return conn
            conn.close()
        host = origin[1].decode("ascii")
        tls = self._tls() if origin[0] == b"https" else None
        sni = (sni_hostname or host) if tls is not None else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin), host, origin[2], ssl=tls, server_hostname=sni
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{origin[2]} timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{origin[2]}: {exc}", request=request) from exc
        return conn

    def _keep(self, conn: _Connection) -> None:
        if self._max_idle is not None and self._idle_count >= self._max_idle:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        conn.expiry = self._expiry
        self._idle.setdefault(conn.origin, collections.deque()).append(conn)
        self._idle_count += 1

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            self._ssl = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        return self._ssl


@dataclass(slots=True)
class Answer:
    """An answer as it is read: status line, raw headers and body (still content-encoded)."""

    status: int = 0
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    keep_alive: bool = False
    to_close: bool = False  # no length and not chunked: the body ends when the server closes

    @property
    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


def _readable(fd: int) -> bool:
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time; the answer is parsed as it arrives."""

    def __init__(self, origin: tuple[bytes, bytes, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None
        self.done: asyncio.Future[Answer] | None = None
        self.deadline: asyncio.Timeout | None = None
        self.read_timeout: float | None = None
        self.lost = False
        self.writable: asyncio.Event | None = None  # while writing is paused: set when it resumes
        self.idle_since = 0.0
        self.expiry: float | None = None

    def reusable(self, now: float) -> bool:
        expired = self.expiry is not None and now - self.idle_since > self.expiry
        transport = self.transport
        if self.lost or expired or transport is None or transport.is_closing():
            return False
        # The server may have closed the connection while the loop was busy (its keep-alive timeout):
        # the close then waits unread in the socket, and a request written now would fail with it,
        # never having reached the server (found against nginx: tests/integration/
        # test_provider_transport_nginx.py). Nothing is due on an idle connection, so anything to
        # read means it is closing (or is a rare late TLS message: a new connection is then the only
        # cost); httpx's own pool looks the same way (httpcore's `is_readable`).
        sock = transport.get_extra_info("socket")
        return sock is None or not _readable(sock.fileno())

    async def exchange(
        self, message: bytes, request: httpx.Request | None, write_timeout: float | None, read_timeout: float | None
    ) -> Answer:
        transport = self.transport
        assert transport is not None and self.done is None
        loop = asyncio.get_running_loop()
        self.answer = Answer()
        done: asyncio.Future[Answer] = loop.create_future()
        self.done = done
        self.read_timeout = read_timeout
        try:
            transport.write(message)
            if self.writable is not None:  # the socket's buffer is full: wait until it drains
                await self._drained(write_timeout, request)
            async with asyncio.timeout(read_timeout) as deadline:
                self.deadline = deadline
                return await done
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("the provider sent nothing within the read timeout", request=request) from None
        except httpx.TransportError as exc:
            if request is not None:
                exc.request = request
            self.close()
            raise
        except BaseException:
            self.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        finally:
            self.done = self.deadline = None

    async def _drained(self, timeout: float | None, request: httpx.Request | None) -> None:
        assert self.writable is not None
        try:
            async with asyncio.timeout(timeout):
                await self.writable.wait()
        except TimeoutError:
            raise httpx.WriteTimeout("the provider took no data within the write timeout", request=request) from None

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the subclassing

    def data_received(self, data: bytes) -> None:
        if self.done is None or self.done.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer from the provider: {exc}"))
            return
        if self.deadline is not None and self.read_timeout is not None and not self.done.done():
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.read_timeout)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        answer, done = self.answer, self.done
        if exc is None and answer is not None and answer.to_close and done is not None and not done.done():
            answer.status = self.parser.get_status_code()
            done.set_result(answer)  # the close is the end of its body (llhttp has no call for it here)
            return
        self._fail(httpx.RemoteProtocolError("the provider closed the connection before its answer was complete"))

    def pause_writing(self) -> None:
        self.writable = asyncio.Event()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()
            self.writable = None

    def _fail(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        self.close()

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        assert self.answer is not None
        self.answer.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.answer is not None
        self.answer.headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer = self.answer
        assert answer is not None
        status = self.parser.get_status_code()
        framed = any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in answer.headers)
        answer.to_close = not framed and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        assert answer is not None
        answer.size += len(body)
        if answer.size > _READ_LIMIT:
            raise httptools.HttpParserCallbackError("answer too large")
        answer.chunks.append(body)

    def on_message_complete(self) -> None:
        answer, done = self.answer, self.done
        assert answer is not None and done is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.answer = Answer()  # an interim answer (100 Continue): the real one follows
            return
        answer.status = status
        answer.keep_alive = self.parser.should_keep_alive()
        if not done.done():
            done.set_result(answer)
