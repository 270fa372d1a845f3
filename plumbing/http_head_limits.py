"""uvicorn's httptools protocol with a bound on a request head's size and on the time it takes to arrive.

Neither uvicorn's httptools protocol nor httptools bounds a request head: httptools joins the pieces of a
header that arrives over several reads with `bytes +=`, and uvicorn does the same with the URL, so the
cost of a long head grows with the square of its length, and a connection that sends nothing, or a byte
now and then, is held for good (uvicorn's keep-alive timeout only runs between requests).

Here each request's head (request line and headers, up to the blank line) may take `max_head_bytes`
bytes and `head_timeout_s` seconds:

- bytes are counted per read, and only while a head is awaited, so a request's body costs nothing; the
  read that crosses the bound is fed only up to the bound, and if the head has not ended there the
  client gets 431 at once, before the parser sees more;
- the deadline runs from the connection's start for its first request and from a request's first byte
  for the next ones (the idle time between requests is uvicorn's keep-alive timeout); a head still
  incomplete then gets 408, a connection that sent nothing is closed without an answer;
- a refused connection gets its answer, then a FIN; what the client still sends is read and dropped for
  at most `linger_s`, because closing a socket with unread data sends a reset that can destroy the
  answer before the client reads it (nginx's "lingering close"); past `linger_bytes` reading stops (the
  client's sends then block) so that a client sending 100 MB without reading does not cost the process
  the reading of it, and one that reads has its answer long before the close.

Bytes that follow a complete request in the same read (pipelining) are not counted against the next
head, so a pipelined head may exceed the bound by at most one read.

Third-party internals touched (uvicorn 0.55 `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`):
the parser callbacks `on_message_begin`, `on_headers_complete` and `on_message_complete`, and the
attributes `transport`, `flow`, `cycle` (its `response_complete` and `keep_alive`), `connections`,
`server_state.default_headers`, `loop`, `parser` and `_unset_keepalive_if_required`.
"""

from __future__ import annotations

import asyncio
import http
from typing import ClassVar, Self

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 32 * 1024
DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_LINGER_S = 1.0
DEFAULT_LINGER_BYTES = 1024 * 1024

_ANSWERS: dict[tuple[type, int], tuple[object, bytes]] = {}  # (protocol class, status) -> (defaults, bytes)


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """The limits are class attributes: `with_limits` makes the configured subclass uvicorn instantiates."""

    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEAD_BYTES
    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S
    linger_s: ClassVar[float] = DEFAULT_LINGER_S
    linger_bytes: ClassVar[int] = DEFAULT_LINGER_BYTES

    _head_open = True  # a head is awaited (or arriving): reads count against the bound
    _head_room = 0  # bytes the current head may still take
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(
        cls,
        max_head_bytes: int,
        head_timeout_s: float,
        linger_s: float = DEFAULT_LINGER_S,
        linger_bytes: int = DEFAULT_LINGER_BYTES,
    ) -> type[Self]:
        if max_head_bytes <= 0 or head_timeout_s <= 0 or linger_s < 0 or linger_bytes < 0:
            raise ValueError("head limits must be positive")
        limits = {
            "max_head_bytes": max_head_bytes,
            "head_timeout_s": head_timeout_s,
            "linger_s": linger_s,
            "linger_bytes": linger_bytes,
        }
        return type(cls.__name__, (cls,), limits)

    def refusal(self, status: int) -> tuple[bytes, bytes]:
        """The content type and body of the 408 or 431 answer (a subclass may speak its API's error format)."""
        return b"text/plain; charset=utf-8", http.HTTPStatus(status).phrase.encode()

    # asyncio protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_room = self.max_head_bytes
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            room = self._head_room - len(data)
            if room < 0:
                self._head_over_bound(data)
                return
            self._head_room = room
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request of a kept-alive connection: its clock starts now
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True  # whatever comes next is the next request's head
        self._head_room = self.max_head_bytes

    # the limits

    def _head_over_bound(self, data: bytes) -> None:
        allowed = self._head_room
        self._head_room = 0
        before = self.cycle
        if allowed:
            super().data_received(data[:allowed])  # the head may end within the bound
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # a malformed request (answered 400) or an upgrade
        if self.cycle is before:  # no head ended within the bound
            self._refuse(431)
        else:
            super().data_received(data[allowed:])

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_room == self.max_head_bytes:
            self.transport.close()  # nothing of a request came: there is no one to answer
        else:
            self._refuse(408)

    def _refuse(self, status: int) -> None:
        self._cancel_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # an earlier (pipelined) request is being answered: no answer may cut into it, so stop
            # reading and close once it is sent
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._unset_keepalive_if_required()
        transport = self.transport
        transport.write(self._answer(status))
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        transport.set_protocol(_Linger(transport, self.loop, self.linger_s, self.linger_bytes))
        # what uvicorn's connection_lost would do, which this protocol no longer gets: leave the server's
        # connections, and break the protocol <-> parser cycle, or every refused connection's objects
        # would wait for the cyclic GC, whose passes then grow with the number of connections refused
        self.connections.discard(self)
        self.parser = None  # type: ignore[assignment]

    def _answer(self, status: int) -> bytes:
        """The whole answer, built once per status and per second: uvicorn renews its default headers
        (the date) every second, and 5,000 slow connections cut at once would build 5,000 copies."""
        defaults = self.server_state.default_headers
        key = (type(self), status)
        cached = _ANSWERS.get(key)
        if cached is not None and cached[0] is defaults:
            return cached[1]
        content_type, body = self.refusal(status)
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in defaults)
        head.append(b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (content_type, len(body)))
        answer = b"".join(head) + body
        _ANSWERS[key] = (defaults, answer)
        return answer

    def _cancel_head_timer(self) -> None:
        timer = self._head_timer
        if timer is not None:
            timer.cancel()
            self._head_timer = None


class _Linger(asyncio.Protocol):
    """A refused connection after its answer: reads are dropped until the client closes or time is up,
    and no longer read once `max_bytes` have been."""

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, seconds: float, max_bytes: int
    ) -> None:
        self._transport = transport
        self._left = max_bytes
        self._timer = loop.call_later(seconds, self._close)

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()

    def _close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()
