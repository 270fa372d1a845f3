"""One pooled httpx client per provider per worker process, driving that provider's adapter.

A provider call is the worker's largest CPU cost, so the request is built once per call, not three
times: the provider URL is resolved against the base URL once per path (httpx re-parses a URL string
on every call, twice). The request goes straight to the client's transport (httpx's own when the
environment names a proxy for the provider: `build_transport`): `AsyncClient.send` would add its
auth flow, redirect and event-hook loops, cookie extraction and a stream wrapper, none of which a
provider call uses (no client auth, redirects are not followed, no hooks), for 43 us a call (62 us
against 20 us, the transport itself included, on a canned answer). So the client keeps no cookies
either: provider APIs need none, and a jar shared by every tenant's calls is state that does not
belong in a gateway. The client knows its transport only as an `httpx.AsyncBaseTransport`; on one
that answers whole directly (our HTTP/1.1 transport: `plumbing.http_call`) a call builds no httpx
Request or Response either: those two took ~0.1 ms of a worker's path at one request at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpx
import orjson

from plumbing.aiohttp_transport import ProviderTransport, StreamingProviderTransport
from plumbing.http1_transport import Http1Transport
from plumbing.http_call import whole_answer_call
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, ProviderResult
from shared.settings import Settings
from shared.stream_events import StreamDelta
from workers.provider_keys import ProviderKeys
from workers.providers import build_adapter
from workers.providers.base import HttpRequest, StreamParser
from workers.providers.translate import map_transport_error


class ProviderClient:
    def __init__(
        self,
        provider: str,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        keys: ProviderKeys | None = None,
    ):
        self.provider = provider
        self.settings = settings
        self.keys = keys or ProviderKeys.from_settings(provider, settings)
        self.adapter = build_adapter(provider, settings)
        base_url = settings.openai_base_url if provider == "openai" else settings.anthropic_base_url
        limits = httpx.Limits(
            max_connections=settings.provider_max_connections,
            max_keepalive_connections=settings.provider_max_connections,
        )
        if transport is None:
            transport = build_transport(settings, httpx.URL(base_url), limits)
        self.transport = transport
        self._call = whole_answer_call(transport)  # status, raw headers, body (content-decoded)
        self.http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.provider_connect_timeout_s,
                read=settings.provider_read_timeout_s,
                write=settings.provider_connect_timeout_s,
                pool=settings.provider_connect_timeout_s,
            ),
            limits=limits,
        )
        self._default_timeout = self.http.timeout.as_dict()
        self._default_headers = list(self.http.headers.raw)
        self._urls: dict[str, httpx.URL] = {}
        self._limits = limits
        self._stream_http: httpx.AsyncClient | None = None  # made on the first stream

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._stream_http is not None:
            await self._stream_http.aclose()
        await self.keys.aclose()

    def open_stream(self, call: ProviderCall) -> ProviderStream:
        """One streamed provider call (`call.stream` is set here): `async with client.open_stream(call)
        as stream: async for batch in stream: ...`; see ProviderStream."""
        if not call.stream:
            call = dataclasses.replace(call, stream=True)
        return ProviderStream(self, call)

    def stream_http(self) -> httpx.AsyncClient:
        """The client of streamed calls: its own pool, on a streaming transport (`build_stream_transport`);
        no read timeout of its own (the stream's first-byte and idle timeouts bound every read)."""
        if self._stream_http is None:
            s = self.settings
            self._stream_http = httpx.AsyncClient(
                base_url=self.http.base_url,
                transport=build_stream_transport(self.http.base_url, self._limits),
                timeout=httpx.Timeout(
                    connect=s.provider_connect_timeout_s,
                    read=None,
                    write=s.provider_connect_timeout_s,
                    pool=s.provider_connect_timeout_s,
                ),
                limits=self._limits,
            )
        return self._stream_http

    def api_key(self) -> str | None:
        return self.keys.first()

    async def complete(self, call: ProviderCall, timeout: float | None = None) -> ProviderResult:
        """One provider call. Raises GatewayError, typed by the adapter, on any failure."""
        body = await self.keys.run(lambda key: self._send(self.adapter.build_request(call, key), timeout))
        return self.adapter.parse_response(body)

    async def probe(self, timeout: float = 5.0) -> float:
        """A cheap authenticated call (the models listing); returns its latency in ms."""
        started = time.perf_counter()
        await self.keys.run(lambda key: self._send(self.adapter.probe_request(key), timeout))
        return (time.perf_counter() - started) * 1000

    async def _send(self, req: HttpRequest, timeout: float | None) -> dict[str, Any]:
        url = self._url(req.path)
        content = orjson.dumps(req.json) if req.json is not None else None
        timeouts = httpx.Timeout(timeout).as_dict() if timeout is not None else self._default_timeout
        try:
            status, headers, raw = await self._call(req.method, url, self._headers(req.headers), content, timeouts)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self.provider) from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 300:
            raise self.adapter.map_error(status, body, httpx.Headers(headers))
        if not isinstance(body, dict):
            raise GatewayError(
                ErrorType.SERVICE_UNAVAILABLE,
                f"{self.provider} answered {status} with a body that is not JSON",
                provider=self.provider,
            )
        return body

    def _headers(self, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
        """The client's default headers with the adapter's on top (names compared case-insensitively),
        as bytes: httpx takes them as they are instead of normalising every header of every call."""
        names = {name.lower().encode() for name in extra}
        headers = [(name, value) for name, value in self._default_headers if name.lower() not in names]
        headers += [(name.encode("ascii"), value.encode("ascii")) for name, value in extra.items()]
        return headers

    def _url(self, path: str) -> httpx.URL:
        """The provider URL of a path, resolved against the base URL as httpx would, once."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self.http.build_request("GET", path).url
        return url


class ProviderStream:
    """One streamed provider answer, read as it comes.

    Opening it (`async with`, or `await stream.open()`) sends the request, with the next key when the
    provider refuses one (`ProviderKeys.run`); a non-2xx answer is read whole and raised as the
    adapter maps it. Iterating it gives, for each read of the body that completed any, the deltas it
    completed (so deltas that arrived together stay together), until the provider's end marker.
    `result()` is the answer read so far. Leaving the context (or `aclose()`) closes the connection at
    once when the answer was not read to its end: the provider sees it and stops generating, and a
    half-read connection never goes back to the pool.

    Bounds: from sending until the first delta, PROVIDER_FIRST_BYTE_TIMEOUT_S (connect, headers and
    any reads without a delta included); between reads after that, PROVIDER_STREAM_IDLE_TIMEOUT_S.
    Every failure is a GatewayError: timeouts and a body that ends before the end marker retryable.
    """

    def __init__(self, client: ProviderClient, call: ProviderCall) -> None:
        self._client = client
        self._call = call
        self._provider = client.provider
        self._parser: StreamParser = client.adapter.stream_parser()
        self._idle_s = client.settings.provider_stream_idle_timeout_s
        self._timeouts = client.stream_http().timeout.as_dict()
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._sent_at = 0.0
        self._first_deadline = 0.0  # loop time by which the first delta must be in
        self.first_delta_ms: float | None = None  # from sending to the first delta

    async def __aenter__(self) -> ProviderStream:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ProviderStream:
        return self

    def result(self) -> ProviderResult:
        return self._parser.result()

    @property
    def done(self) -> bool:
        """Whether the provider's end marker was read."""
        return self._parser.done

    async def open(self) -> None:
        self._sent_at = time.perf_counter()
        self._first_deadline = asyncio.get_running_loop().time() + self._client.settings.provider_first_byte_timeout_s
        try:
            async with asyncio.timeout_at(self._first_deadline):
                self._response = await self._client.keys.run(self._send)
        except TimeoutError:
            raise self._timeout(first=True) from None
        self._chunks = self._response.aiter_bytes()

    async def _send(self, key: str | None) -> httpx.Response:
        client, http = self._client, self._client.stream_http()
        req = client.adapter.build_request(self._call, key)
        content = orjson.dumps(req.json) if req.json is not None else None
        headers = client._headers(req.headers)
        request = httpx.Request(
            req.method, client._url(req.path), headers=headers, content=content, extensions={"timeout": self._timeouts}
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._provider) from None
        if response.status_code < 300:
            return response
        try:
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._provider) from None
        finally:
            await response.aclose()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        raise client.adapter.map_error(response.status_code, body if isinstance(body, dict) else None, response.headers)

    async def __anext__(self) -> list[StreamDelta]:
        while True:
            if self._chunks is None or self._parser.done:
                await self._finish()
                raise StopAsyncIteration
            first = self.first_delta_ms is None
            try:
                if first:
                    async with asyncio.timeout_at(self._first_deadline):
                        chunk = await anext(self._chunks)
                else:
                    async with asyncio.timeout(self._idle_s):
                        chunk = await anext(self._chunks)
                deltas = self._parser.feed(chunk)
            except StopAsyncIteration:
                await self.aclose()
                raise self._ended_early(None) from None
            except TimeoutError:
                await self.aclose()
                raise self._timeout(first) from None
            except httpx.TransportError as exc:  # the connection dropped mid-body
                await self.aclose()
                raise self._ended_early(exc) from None
            except BaseException:  # an error event (GatewayError), a cancellation
                await self.aclose()
                raise
            if deltas:
                if first:
                    self.first_delta_ms = (time.perf_counter() - self._sent_at) * 1000
                return deltas

    async def _finish(self) -> None:
        """After the end marker: read the body to its end (normally in the last read already), so
        that the connection goes back to the pool, then close."""
        if self._chunks is not None and self._parser.done:
            try:
                async with asyncio.timeout(self._idle_s):
                    async for _ in self._chunks:
                        pass
            except (TimeoutError, httpx.HTTPError):
                pass  # the answer is whole: only the connection is lost
        await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream connection now unless the body was read to its end (idempotent)."""
        chunks, response = self._chunks, self._response
        self._chunks = self._response = None
        if chunks is not None and hasattr(chunks, "aclose"):
            await chunks.aclose()
        if response is not None:
            await response.aclose()

    def _timeout(self, first: bool) -> GatewayError:
        s = self._client.settings
        what = (
            f"sent no token within PROVIDER_FIRST_BYTE_TIMEOUT_S ({s.provider_first_byte_timeout_s:g}s) of the request"
            if first
            else f"sent nothing for PROVIDER_STREAM_IDLE_TIMEOUT_S ({s.provider_stream_idle_timeout_s:g}s) mid-stream"
        )
        return GatewayError(ErrorType.TIMEOUT, f"{self._provider} {what}", retryable=True, provider=self._provider)

    def _ended_early(self, exc: BaseException | None) -> GatewayError:
        detail = f" ({type(exc).__name__})" if exc is not None else ""
        return GatewayError(
            ErrorType.SERVICE_UNAVAILABLE,
            f"the provider's stream ended before its end marker{detail}",
            retryable=True,
            provider=self._provider,
        )


def build_transport(
    settings: Settings, base_url: httpx.URL, limits: httpx.Limits, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncBaseTransport:
    """The transport of a provider's calls. A proxy the environment names for the provider's URL
    (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY honoured) is taken through httpx's own transport:
    the faster ones speak to the provider directly only. `verify` is httpx's: the certificate
    authorities trusted (True: the system's, or SSL_CERT_FILE's), as a context for any others."""
    proxy = _environment_proxy(base_url)
    if proxy is not None:
        return httpx.AsyncHTTPTransport(proxy=proxy, limits=limits, verify=verify)
    if settings.provider_http_transport == "http1":
        return Http1Transport(limits=limits, verify=verify)  # see its module doc for the figures
    if settings.provider_http_transport == "aiohttp":
        # httpx's API over aiohttp's connection handling: measured at 460 us of CPU per call
        # against 785 us for httpx's default transport (bench notes in the README); with the
        # lean transport and no cookie handling, 0.90M instructions per call against 1.17M
        # (callgrind, a warm loop against the simulator).
        return ProviderTransport(limits=limits, verify=verify)
    return httpx.AsyncHTTPTransport(limits=limits, verify=verify)


def _environment_proxy(url: httpx.URL) -> str | None:
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(url.host):  # NO_PROXY
        return None
    return proxies.get(url.scheme) or proxies.get("all")


def build_stream_transport(base_url: httpx.URL, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport of streamed calls: a library's own streaming (the HTTP/1.1 transport answers
    whole only). httpx_aiohttp's, over aiohttp's connection handling, costs about a third less CPU
    per chunk than httpx's own (measured with a local SSE server; figures in the branch's report);
    httpx's own through a proxy the environment names, as for whole answers."""
    proxy = _environment_proxy(base_url)
    if proxy is not None:
        return httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)
    return StreamingProviderTransport(limits=limits)
