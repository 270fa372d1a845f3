"""What a provider receives and how its answer is read, on the HTTP/1.1 transport's direct path
(no httpx Request or Response objects) and on httpx's own transport: the same on both."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from plumbing.http1_transport import Http1Transport
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, ProviderResult
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from workers.provider_client import ProviderClient
from workers.provider_keys import ProviderKeys

ServeAsgi = Callable[[ASGIApp], AbstractAsyncContextManager[str]]  # the serve_asgi fixture (conftest)
transports = pytest.mark.parametrize(
    "make_transport", [Http1Transport, httpx.AsyncHTTPTransport], ids=["http1-direct", "httpx"]
)
CALL = ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi é"}], max_tokens=5)


class Provider:
    """An OpenAI-shaped upstream that records each request; /gzip/ answers gzip-encoded, /busy/ 429."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await Request(scope, receive).body()
        self.seen.append(
            {
                "method": scope["method"],
                "path": scope["path"],
                "headers": [(k.decode().lower(), v.decode()) for k, v in scope["headers"]],
                "body": orjson.loads(body),
            }
        )
        status, headers = 200, [(b"content-type", b"application/json")]
        doc = orjson.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "gpt-4",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
        if scope["path"].startswith("/busy/"):
            status = 429
            headers.append((b"retry-after", b"7"))
            doc = orjson.dumps({"error": {"message": "Rate limit reached", "type": "requests", "code": None}})
        if scope["path"].startswith("/gzip/"):
            doc = gzip.compress(doc)
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": doc})


async def complete(base_url: str, transport: httpx.AsyncBaseTransport) -> ProviderResult:
    """One call through a provider client on `transport`, closed after."""
    s = Settings(_env_file=None, openai_api_key="sk-test-0000000000", openai_base_url=base_url, provider_keys_file=None)
    keys = ProviderKeys("openai", SecretsSource(s), redis=fakeredis.FakeAsyncRedis(), cooldown_s=300)
    provider = ProviderClient("openai", s, transport=transport, keys=keys)
    try:
        return await provider.complete(CALL)
    finally:
        await provider.aclose()


async def test_the_direct_path_sends_what_httpx_sends(serve_asgi: ServeAsgi) -> None:
    """Host, Content-Length, the client's defaults and the adapter's headers: the same request, byte
    for byte in its headers and body, as httpx's own transport sends."""
    upstream = Provider()
    async with serve_asgi(upstream) as url:
        for transport in (Http1Transport(), httpx.AsyncHTTPTransport()):
            assert (await complete(f"{url}/v1", transport)).content == "ok"
    direct, reference = upstream.seen
    assert direct == reference
    headers = dict(direct["headers"])
    assert headers["host"] == url.removeprefix("http://")
    assert headers["content-length"] == str(len(orjson.dumps(direct["body"])))
    assert headers["authorization"] == "Bearer sk-test-0000000000"
    assert direct["path"] == "/v1/chat/completions" and direct["body"]["messages"][0]["content"] == "hi é"


@transports
async def test_an_encoded_answer_is_decoded(
    serve_asgi: ServeAsgi, make_transport: Callable[[], httpx.AsyncBaseTransport]
) -> None:
    async with serve_asgi(Provider()) as url:
        result = await complete(f"{url}/gzip/v1", make_transport())
    assert result.content == "ok" and result.usage.total_tokens == 4


@transports
async def test_an_error_answer_is_mapped_with_its_headers(
    serve_asgi: ServeAsgi, make_transport: Callable[[], httpx.AsyncBaseTransport]
) -> None:
    async with serve_asgi(Provider()) as url:
        with pytest.raises(GatewayError) as refused:
            await complete(f"{url}/busy/v1", make_transport())
    assert refused.value.type is ErrorType.RATE_LIMIT
    assert refused.value.retryable and refused.value.retry_after == 7
