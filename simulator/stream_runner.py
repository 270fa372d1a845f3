"""Send a `StreamReply`: latency, the head, the chunks on a timer, mid-stream faults, disconnects.

Each content chunk is one ASGI send (`more_body=True`), so the server writes it as it is produced and
a client sees the chunks spaced. A second task waits on `receive` for the client's disconnect (uvicorn
drops writes to a closed connection silently): a stream the client leaves is stopped at once and
counted `client_closed`, which is how a test proves the gateway cancelled its upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib

from simulator.asgi import ConnectionDropped, Receive, Scope, Send, close_connection, until_disconnect
from simulator.faults import FaultRule
from simulator.state import ProviderState, SimState
from simulator.stream_reply import StreamReply

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
# a stream's outcome (ProviderState.streams) -> its entry in by_status
BY_STATUS = {
    "completed": "200",
    "client_closed": "client_closed",
    "error_event": "stream_error",
    "dropped": "stream_drop",
}


class _Stream:
    """One stream being sent; `ending` once its last send has begun (the response's end wakes the
    disconnect watcher too, and must not be taken for the client leaving)."""

    __slots__ = ("ending", "reply", "rule", "scope", "send", "state")

    def __init__(self, reply: StreamReply, scope: Scope, send: Send, state: SimState, rule: FaultRule | None) -> None:
        self.reply = reply
        self.scope = scope
        self.send = send
        self.state = state
        self.rule = rule
        self.ending = False

    async def _body(self, data: bytes, more: bool) -> None:
        self.ending = not more
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def run(self, delay_s: float, interval_s: float) -> str:
        reply, rule = self.reply, self.rule
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        headers = [*_SSE_HEADERS, *reply.headers]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._body(reply.opening, True)
        pieces = reply.pieces
        fault_at = -1 if rule is None else min(rule.after_chunks, len(pieces))
        for i in range(len(pieces) + 1):
            if 0 < i < len(pieces):
                # the gap after the previous chunk, as the setting says (a late loop delays the rest rather
                # than bursting to catch up); 0 still yields, so that long streams take turns
                await asyncio.sleep(interval_s)
            if i == fault_at and rule is not None:
                ended = await self._fault(rule)
                if ended is not None:
                    return ended
            if i < len(pieces):
                await self._body(reply.chunk(pieces[i]), True)
        await self._body(reply.closing, False)
        return "completed"

    async def _fault(self, rule: FaultRule) -> str | None:
        """Apply a mid-stream fault: the stream's outcome if it ends the stream, None after a stall."""
        if rule.mode == "stream_error":
            await self._body(self.reply.error(rule), False)
            return "error_event"
        if rule.mode == "stream_drop":
            await asyncio.sleep(0)  # the server's held first write goes out before the close
            if not close_connection(self.scope, self.send):
                raise ConnectionDropped("simulated connection drop mid-stream")
            return "dropped"
        await self._stall(rule.seconds)
        return None

    async def _stall(self, seconds: float | None) -> None:
        """Send nothing for `seconds` (None: until the faults are cleared, as a `hang`)."""
        released = self.state.release  # replaced when released: wait on this one
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await released.wait()


async def run_stream(
    reply: StreamReply,
    scope: Scope,
    receive: Receive,
    send: Send,
    state: SimState,
    ps: ProviderState,
    delay_s: float,
    rule: FaultRule | None,
) -> str:
    """Stream `reply` after `delay_s`, applying `rule` (a mid-stream fault); the outcome for by_status."""
    ps.streams["started"] += 1
    stream = _Stream(reply, scope, send, state, rule)
    gone = asyncio.ensure_future(until_disconnect(receive))
    sending = asyncio.ensure_future(stream.run(delay_s, ps.stream_interval_ms / 1000.0))
    outcome = "client_closed"
    try:
        await asyncio.wait((gone, sending), return_when=asyncio.FIRST_COMPLETED)
        if not sending.done() and stream.ending:
            await asyncio.wait((sending,))
        if sending.done() and not (gone.done() and sending.exception() is not None):
            try:
                outcome = sending.result()
            except ConnectionDropped:
                outcome = "dropped"
                raise
            if outcome == "dropped":  # let the server see the close, or it logs "returned without response"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await gone
    finally:
        gone.cancel()
        sending.cancel()
        ps.streams[outcome] += 1
    return BY_STATUS[outcome]
