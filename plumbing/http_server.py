"""uvicorn's httptools protocol, sending a response's head together with its body.

uvicorn writes the status line and headers when the app starts the response, then the body when the
app sends it: two writes, two TCP segments, and the client wakes up twice for one small answer (the
second segment can leave a fraction of a millisecond after the first, and a client can do nothing with
the head alone). Here the head waits for the first body write of the same event-loop turn and
both leave in one write; a head with no body in that turn (a stream whose first part is not ready,
or the interim `100 Continue`) leaves at the end of the turn.

Third-party internals touched (uvicorn; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py): `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`,
subclassed: its `on_headers_complete` callback extended, its `cycle`, `transport` and `loop`
attributes read, and the cycle's `transport` replaced by a wrapper that holds the first write.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeadWithBody:
    """The transport as one response's cycle sees it: the first write is held until the next write or
    the end of the loop's turn, whichever comes first."""

    __slots__ = ("_flush", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._loop = loop

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            assert self._flush is not None
            self._flush.cancel()
            self._transport.writelines((held, data))
        elif self._flush is None:  # the first write: hold it for this turn
            self._held = data
            self._flush = self._loop.call_soon(self._write_held)
        else:
            self._transport.write(data)

    def _write_held(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._write_held()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:
            self.cycle.transport = cast(asyncio.Transport, _HeadWithBody(self.transport, self.loop))
