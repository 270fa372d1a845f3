"""The provider calls' httpx transports (HTTP/1.1 on asyncio, and over aiohttp): whole answers, httpx's
decoding and httpx's errors."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from plumbing.aiohttp_transport import ProviderTransport
from plumbing.http1_transport import Http1Transport

ServeAsgi = Callable[[ASGIApp], AbstractAsyncContextManager[str]]  # the serve_asgi fixture (conftest)
Transport = type[Http1Transport] | type[ProviderTransport]
transports = pytest.mark.parametrize("transport", [Http1Transport, ProviderTransport])


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with what it got (gzip-encoded when asked to be), or stalls, or breaks off."""
    body = await Request(scope, receive).body()
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(1)  # longer than the client's read timeout
    seen = {"method": scope["method"], "path": path, "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}
    doc = orjson.dumps({**seen, "body": body.decode()})
    headers = [(b"content-type", b"application/json"), (b"x-answer", b"yes")]
    if path == "/gzip":
        doc = gzip.compress(doc)
        headers.append((b"content-encoding", b"gzip"))
    if path == "/broken":
        headers.append((b"content-length", str(len(doc) + 100).encode()))
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": doc, "more_body": path == "/broken"})
    if path == "/broken":
        raise RuntimeError("the server dies before the promised end of its answer")


@transports
async def test_a_call_round_trips_with_headers_body_and_status(serve_asgi: ServeAsgi, transport: Transport) -> None:
    async with serve_asgi(echo) as url, httpx.AsyncClient(base_url=url, transport=transport()) as client:
        for path in ("/plain", "/gzip", "/plain"):  # again on the kept-alive connection
            response = await client.post(path, json={"q": "é"}, headers={"Authorization": "Bearer k"})
            assert response.status_code == 201
            assert response.headers["x-answer"] == "yes"
            got = response.json()  # gzip decoded by httpx, as with its own transport
            assert got["path"] == path and orjson.loads(got["body"]) == {"q": "é"}
            assert got["headers"]["authorization"] == "Bearer k"
            assert got["headers"]["content-type"] == "application/json"


@transports
async def test_errors_are_httpx_errors(serve_asgi: ServeAsgi, transport: Transport) -> None:
    async with (
        serve_asgi(echo) as url,
        httpx.AsyncClient(base_url=url, transport=transport(), timeout=0.3) as client,
    ):
        with pytest.raises(httpx.TimeoutException):
            await client.post("/slow", content=b"{}")
        with pytest.raises(httpx.TransportError):
            await client.post("/broken", content=b"{}")
        assert (await client.post("/plain", content=b"{}")).status_code == 201  # the pool recovers
    async with httpx.AsyncClient(base_url=url, transport=transport()) as client:
        # httpx_aiohttp's mapping says ConnectTimeout; the transport refines it (`_dropped_is_not_a_timeout`)
        with pytest.raises(httpx.TransportError):
            await client.post("/plain", content=b"{}")  # the server is gone
