"""The one small interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import GatewayError
from shared.schemas import ProviderCall, ProviderResult
from shared.stream_events import StreamDelta


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A provider request ready for httpx: path relative to the base URL, headers and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None


class StreamParser(Protocol):
    """Parses one streamed answer's body (sans-IO): bytes in as they were read, deltas out."""

    def feed(self, data: bytes) -> list[StreamDelta]:
        """The deltas completed by `data` (bytes of the body as read, cut anywhere), in order. An error
        event in the stream raises the GatewayError `map_error` would give for it."""
        ...

    @property
    def done(self) -> bool:
        """Whether the provider's end of stream (`data: [DONE]`, `message_stop`) was read."""
        ...

    def result(self) -> ProviderResult:
        """The completion assembled from what was read so far: its content, finish reason, usage
        (as the provider reported it, zeros where it did not), model and provider id."""
        ...


class ProviderAdapter(Protocol):
    name: str

    def build_request(self, call: ProviderCall, api_key: str | None) -> HttpRequest:
        """Translate a provider-neutral call into this provider's wire format."""
        ...

    def parse_response(self, body: dict[str, Any]) -> ProviderResult:
        """Turn a 2xx body into the neutral result (content, finish reason, usage)."""
        ...

    def map_error(self, status: int, body: dict[str, Any] | None, headers: Mapping[str, str]) -> GatewayError:
        """Map a non-2xx answer (real status codes and error bodies) onto the gateway's taxonomy."""
        ...

    def stream_parser(self) -> StreamParser:
        """A parser for one streamed answer (a call built with `call.stream` set)."""
        ...

    def probe_request(self, api_key: str | None) -> HttpRequest:
        """A cheap request for health checks (the models listing)."""
        ...
