"""httpx's transport for provider calls: aiohttp's connection handling, with a lean path per call.

httpx_aiohttp's transport hands every request to aiohttp as strings (the URL parsed again by yarl,
the timeouts rebuilt) and every answer back to httpx as a stream that httpx then reads through four
async generators. A provider's answer is one JSON document, read whole before anyone looks at it:
here aiohttp reads it, and httpx gets it as content (httpx still decodes any Content-Encoding, as
aiohttp's own decompression stays off). Connection pool, TLS, proxies and the mapping of aiohttp's
errors to httpx's are httpx_aiohttp's own.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL


class ProviderTransport(AiohttpTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[int, tuple[httpx.URL, URL]] = {}
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        proxy = self.proxy
        with map_aiohttp_exceptions():
            async with self.client.request(
                request.method,
                self._url(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as it would for its own transport
                compress=False,
                timeout=self._timeout(request.extensions.get("timeout", {})),
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

    def _url(self, url: httpx.URL) -> URL:
        """yarl's URL of a provider URL, parsed once: the provider client sends the same URL object
        for a path every time (kept here with its parse, so its id stays its own)."""
        known = self._urls.get(id(url))
        if known is None or known[0] is not url:
            if len(self._urls) > 64:
                self._urls.clear()
            known = self._urls[id(url)] = (url, URL(str(url), encoded=True))
        return known[1]

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's timeouts as aiohttp's, as httpx_aiohttp maps them (connect, read, pool)."""
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        made = self._timeouts.get(key)
        if made is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            made = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
        return made
