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

import ssl
import time
import urllib.request
from typing import Any

import httpx
import orjson

from plumbing.aiohttp_transport import ProviderTransport
from plumbing.http1_transport import Http1Transport
from plumbing.http_call import whole_answer_call
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, ProviderResult
from shared.settings import Settings
from workers.provider_keys import ProviderKeys
from workers.providers import build_adapter
from workers.providers.base import HttpRequest
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

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.keys.aclose()

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
