"""Server-Sent Events framing, sans-IO: body bytes in as they were read, complete events out.

Both providers stream SSE (OpenAI `data:` lines only; Anthropic `event:` and `data:` lines); what an
event means is the adapter's business, this module only cuts the body into events as the SSE
specification says: lines end with CRLF, LF or CR; `:` starts a comment; `data:` lines of one event
are joined with LF; a blank line ends the event; an event without data is dropped, as is a last
event the body never ended. A read may stop anywhere, in a line or in a UTF-8 sequence: only
complete lines are looked at (a line end is never part of a multi-byte sequence), and an event's
data stays bytes, as orjson reads them, so nothing is decoded twice.
"""

from __future__ import annotations

from typing import NamedTuple


class SseEvent(NamedTuple):
    event: str  # the `event:` field, "message" when the event has none (the specification's default)
    data: bytes


class SseSplitter:
    __slots__ = ("_data", "_event", "_partial", "_skip_lf")

    def __init__(self) -> None:
        self._partial = b""  # the start of a line whose end has not been read yet
        self._skip_lf = False  # the last read ended with CR: an LF starting the next one is its CRLF's
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events `chunk` completes, in order."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if not chunk:
            return []
        buf = self._partial + chunk if self._partial else chunk
        lines = buf.splitlines(keepends=True)  # CRLF, LF and CR (bytes split on nothing else)
        last = lines[-1]
        if last.endswith((b"\n", b"\r")):
            self._partial = b""
            self._skip_lf = last.endswith(b"\r")
        else:
            self._partial = lines.pop()
        events: list[SseEvent] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if self._data:
                    events.append(SseEvent(self._event or "message", b"\n".join(self._data)))
                self._event, self._data = "", []
            elif line.startswith(b"data:"):
                self._data.append(_value(line, 5))
            elif line.startswith(b"event:"):
                self._event = _value(line, 6).decode("utf-8", "replace")
            # comments (`:`), `id:`, `retry:` and unknown fields: nothing a provider's answer needs
        return events


def _value(line: bytes, start: int) -> bytes:
    """A field's value: after the colon, one leading space dropped (the specification's rule)."""
    return line[start + 1 :] if line[start : start + 1] == b" " else line[start:]
