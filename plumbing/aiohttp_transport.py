"""httpx's transport for provider calls: aiohttp's connection handling, with a lean path per call.

httpx_aiohttp's transport hands every answer back to httpx as a stream that httpx then reads through
four async generators. A provider's answer is one JSON document, read whole before anyone looks at
it: here aiohttp reads it, and httpx gets it as content (httpx still decodes any Content-Encoding,
as aiohttp's own decompression stays off). Connection pool, TLS, proxies and the mapping of
aiohttp's errors to httpx's are httpx_aiohttp's own.

Third-party internals touched (httpx-aiohttp 0.2.x; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py):
- `httpx_aiohttp.AiohttpTransport`, subclassed: `handle_async_request` replaced (ProviderTransport)
  or wrapped (StreamingProviderTransport); its `client` and `proxy` attributes and `get_client()` used;
- `httpx_aiohttp.transport.map_aiohttp_exceptions` (not exported by the package), and the error it
  maps a dropped connection to (`ConnectTimeout`, corrected here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL


class ProviderTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        proxy = self.proxy
        with _dropped_is_not_a_timeout(), map_aiohttp_exceptions():
            async with self.client.request(
                request.method,
                URL(str(request.url), encoded=True),  # httpx's URL is encoded already
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as it would for its own transport
                compress=False,
                timeout=_timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
                proxy_headers=proxy.headers if proxy else None,
            ) as response:
                content = await response.read()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            response.status, headers=response.raw_headers, content=content, request=request, extensions=extensions
        )


class StreamingProviderTransport(AiohttpTransport):
    """httpx_aiohttp's transport as it is for streamed answers (the body handed to httpx as aiohttp
    reads it), a refused or dropped connection mapped as ProviderTransport maps it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _dropped_is_not_a_timeout():
            return await super().handle_async_request(request)


@contextlib.contextmanager
def _dropped_is_not_a_timeout() -> Iterator[None]:
    """httpx_aiohttp maps a dropped connection (aiohttp's ClientConnectionError) to ConnectTimeout; it
    is not a timeout: RemoteProtocolError, as httpx's own transport says."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, aiohttp.ServerTimeoutError):
            raise httpx.RemoteProtocolError(str(exc) or type(cause).__name__) from None
        raise


def _timeout(timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's timeouts as aiohttp's, as httpx_aiohttp maps them (connect, read, pool)."""
    return aiohttp.ClientTimeout(
        sock_connect=timeout.get("connect"), sock_read=timeout.get("read"), connect=timeout.get("pool")
    )
