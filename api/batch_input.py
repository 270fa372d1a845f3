"""Reading a batch upload incrementally: JSONL line by line, or a JSON array item by item.

Neither reader holds more than one line (or item) plus one network chunk; items are validated as
they come and handed on in chunks, so a 50,000-request upload never sits whole in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from api.openai_shapes import parse_chat_body, parse_embeddings_body, validation_error
from shared.admission import build_payload
from shared.batches import encode_item
from shared.errors import GatewayError
from shared.schemas import ChatRequest, EmbeddingsRequest
from shared.settings import Settings

Format = Literal["openai", "gateway"]
MAX_ERRORS = 20
MAX_CUSTOM_ID = 512
OPENAI_URLS = ("/v1/chat/completions", "/chat/completions")
EMBEDDINGS_URLS = ("/v1/embeddings", "/embeddings")


class UploadError(Exception):
    """The upload cannot be read any further (not JSON Lines or an array, a line too long)."""


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str

    def to_api(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


class JsonlReader:
    """Splits a byte stream into numbered lines; blank lines are counted and skipped."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._rest = b""
        self._line = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        data = self._rest + chunk if self._rest else chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        if len(self._rest) > self.max_line_bytes:
            raise UploadError(f"line {self._line + len(lines) + 1} is longer than {self.max_line_bytes} bytes")
        for line in lines:
            self._line += 1
            if line.strip():
                yield self._line, line

    def close(self) -> Iterator[tuple[int, bytes]]:
        if self._rest.strip():
            self._line += 1
            yield self._line, self._rest
        self._rest = b""


_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_IN_OBJECT = re.compile(rb'["{}]')
_IN_STRING = re.compile(rb'["\\]')


class JsonArrayReader:
    """Splits `[{...}, {...}]` into its objects without parsing them, numbered from 1.

    It tracks only strings, escapes and brace depth; each object is then parsed on its own, so
    malformed JSON inside one is reported for that item.
    """

    def __init__(self, max_item_bytes: int) -> None:
        self.max_item_bytes = max_item_bytes
        self._state = "start"  # start | between | object | string | done
        self._need_comma = False
        self._after_comma = False
        self._depth = 0
        self._skip = 0  # bytes to skip at the next chunk's start (an escape split across chunks)
        self._item = bytearray()
        self._count = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        pos = self._skip
        if pos:
            self._append(chunk[:pos])  # the escaped byte that ended the previous chunk's backslash
            self._skip = 0
        n = len(chunk)
        while pos < n:
            if self._state in ("start", "between", "done"):
                m = _NON_SPACE.search(chunk, pos)
                if m is None:
                    return
                pos = m.start()
                yield from self._structural(chunk[pos : pos + 1])
                pos += 1
                continue
            start = pos
            pattern = _IN_STRING if self._state == "string" else _IN_OBJECT
            while True:
                m = pattern.search(chunk, pos)
                if m is None:
                    self._append(chunk[start:])
                    return
                token = chunk[m.start() : m.end()]
                pos = m.end()
                if self._state == "string":
                    if token == b"\\":
                        pos += 1  # the escaped byte, maybe a quote
                        if pos > n:
                            self._skip = pos - n
                            self._append(chunk[start:])
                            return
                    else:
                        self._state = "object"
                        break
                elif token == b'"':
                    self._state = "string"
                    break
                elif token == b"{":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        self._append(chunk[start:pos])
                        self._count += 1
                        item = bytes(self._item)
                        self._item.clear()
                        self._state = "between"
                        self._need_comma = True
                        self._after_comma = False
                        yield self._count, item
                        break
            if self._state in ("string", "object"):
                self._append(chunk[start:pos])

    def _append(self, data: bytes) -> None:
        self._item += data
        if len(self._item) > self.max_item_bytes:
            raise UploadError(f"item {self._count + 1} is longer than {self.max_item_bytes} bytes")

    def _structural(self, ch: bytes) -> Iterator[tuple[int, bytes]]:
        if self._state == "start":
            if ch != b"[":
                raise UploadError("the upload is neither JSON Lines nor a JSON array")
            self._state = "between"
            return
        if self._state == "done":
            raise UploadError("unexpected data after the end of the JSON array")
        if ch == b"{":
            if self._need_comma:
                raise UploadError(f"item {self._count + 1}: expected ',' between items")
            self._state, self._depth, self._need_comma = "object", 1, False
            self._item += b"{"
        elif ch == b",":
            if not self._need_comma:
                raise UploadError(f"item {self._count + 1}: unexpected ','")
            self._need_comma, self._after_comma = False, True
        elif ch == b"]":
            if self._after_comma:
                raise UploadError(f"item {self._count + 1}: trailing ',' before ']'")
            self._state = "done"
        else:
            raise UploadError(f"item {self._count + 1}: each item must be a JSON object")
        yield from ()

    def close(self) -> Iterator[tuple[int, bytes]]:
        if self._state != "done":
            raise UploadError("the JSON array is not closed (the upload ended early)")
        yield from ()


@dataclass(slots=True)
class ParsedItem:
    custom_id: str
    request: ChatRequest | EmbeddingsRequest
    format: Format


def parse_item(raw: bytes) -> ParsedItem:
    """One upload item: an OpenAI Batch line (`custom_id`, `method`, `url`, `body`) or the
    gateway's own request body with a `customId`. ValueError/GatewayError say what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    if "body" in data:
        return _openai_item(data)
    custom_id = data.pop("customId", None)
    if custom_id is None:
        custom_id = data.pop("custom_id", None)
    _check_custom_id(custom_id, "customId")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return ParsedItem(custom_id, request, "gateway")


def _openai_item(data: dict[str, Any]) -> ParsedItem:
    custom_id = data.get("custom_id")
    _check_custom_id(custom_id, "custom_id")
    method = data.get("method", "POST")
    if method != "POST":
        raise ValueError("method must be POST")  # the value is not echoed: it could be anything
    url = data.get("url", OPENAI_URLS[0])
    if url in EMBEDDINGS_URLS:
        return ParsedItem(str(custom_id), parse_embeddings_body(data["body"]), "openai")
    if url not in OPENAI_URLS:
        raise ValueError(f"url must be {OPENAI_URLS[0]} or {EMBEDDINGS_URLS[0]}")
    # `stream` means nothing in a batch: results are fetched whole
    return ParsedItem(str(custom_id), parse_chat_body(data["body"]).to_chat_request(), "openai")


def _check_custom_id(custom_id: Any, name: str) -> None:
    if not isinstance(custom_id, str) or not custom_id:
        raise ValueError(f"{name} is required (a non-empty string)")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise ValueError(f"{name} is longer than {MAX_CUSTOM_ID} characters")


class BatchBuilder:
    """Validates numbered items and turns them into staged queue items, a chunk at a time.
    After the first error nothing more is produced; up to MAX_ERRORS errors are collected."""

    def __init__(self, settings: Settings, batch_id: str, tenant: str, submitted_ms: int, kind_of_unit: str) -> None:
        self.settings = settings
        self.batch_id = batch_id
        self.tenant = tenant
        self.submitted_ms = submitted_ms
        self.unit = kind_of_unit  # "line" or "item", as the error messages say
        self.format: Format | None = None
        self.total = 0
        self.errors: list[LineError] = []
        self.providers: set[str] = set()
        self._seen: set[str] = set()
        self._chunk: dict[str, list[bytes]] = {}
        self._in_chunk = 0

    def add(self, number: int, raw: bytes) -> None:
        self.total += 1
        if self.total > self.settings.batch_max_requests:
            self.error(number, f"a batch holds at most {self.settings.batch_max_requests} requests")
            return
        try:
            item = parse_item(raw)
            if self.format is None:
                self.format = item.format
            elif item.format != self.format:
                raise ValueError(f"mixes formats: the batch started in the {self.format} format")
            if item.custom_id in self._seen:
                raise ValueError(f"custom_id {item.custom_id!r} is used twice")
            if "\t" in (item.request.model or ""):
                raise ValueError("model must not contain tabs")
            payload = build_payload(item.request, self.settings, kind="batch", tenant=self.tenant)
        except (ValueError, GatewayError) as exc:
            message = exc.message if isinstance(exc, GatewayError) else str(exc)
            if isinstance(exc, GatewayError) and exc.param:
                message = f"{exc.param}: {message}" if not message.startswith(exc.param) else message
            self.error(number, message)
            return
        self._seen.add(item.custom_id)
        if self.errors:
            return
        payload.batch_id = self.batch_id
        payload.custom_id = item.custom_id
        self.providers.add(payload.provider)
        self._chunk.setdefault(payload.provider, []).append(encode_item(payload, self.submitted_ms))
        self._in_chunk += 1

    def error(self, number: int, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(number, f"{self.unit} {number}: {message}"))

    @property
    def full(self) -> bool:
        return len(self.errors) >= MAX_ERRORS

    def chunk_ready(self, size: int) -> bool:
        return self._in_chunk >= size

    def take_chunk(self) -> dict[str, list[bytes]]:
        chunk, self._chunk, self._in_chunk = self._chunk, {}, 0
        return chunk
