"""Provider keys: tried in order, a refused key set aside for every worker (fakeredis), reloaded live."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from shared import keys
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from workers.provider_client import ProviderClient
from workers.provider_keys import ProviderKeys, key_id

OLD, NEW, SPARE = "sk-old-0000000000", "sk-new-1111111111", "sk-spare-22222222"


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"openai_api_key": f"{OLD},{NEW}", "provider_keys_file": None}
    return Settings(_env_file=None, **{**base, **kw})


def ring(redis: Any, s: Settings | None = None, **kw: Any) -> ProviderKeys:
    s = s or settings()
    return ProviderKeys("openai", SecretsSource(s), redis=redis, cooldown_s=300, **kw)


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeAsyncRedis()


class Upstream:
    """A provider that refuses some keys: records which key each call carried."""

    def __init__(self, refused: set[str], error: ErrorType = ErrorType.AUTHENTICATION) -> None:
        self.refused = refused
        self.error = error
        self.seen: list[str | None] = []

    async def __call__(self, key: str | None) -> str:
        self.seen.append(key)
        if key in self.refused:
            raise GatewayError(self.error, "refused", provider="openai")
        return f"answered with {key}"


async def test_a_refused_key_is_set_aside_and_the_next_one_used_at_once(redis: Any) -> None:
    worker_a, worker_b = ring(redis), ring(redis)
    upstream = Upstream({OLD})
    assert await worker_a.run(upstream) == f"answered with {NEW}"
    assert upstream.seen == [OLD, NEW]
    # shared through Redis under the key's hash, never the key itself
    stored = await redis.zrange(keys.provider_key_cooldowns("openai"), 0, -1)
    assert stored == [key_id(OLD).encode()]
    assert await redis.keys("*") == [keys.provider_key_cooldowns("openai").encode()]
    # another worker skips the set-aside key without trying it
    upstream.seen.clear()
    assert await worker_b.run(upstream) == f"answered with {NEW}"
    assert upstream.seen == [NEW]
    assert await worker_a.run(upstream) == f"answered with {NEW}"
    assert upstream.seen == [NEW, NEW]


async def test_every_key_refused_ends_in_authentication_error(redis: Any) -> None:
    keys_ = ring(redis, settings(openai_api_keys=SPARE))
    upstream = Upstream({OLD, NEW, SPARE})
    with pytest.raises(GatewayError) as info:
        await keys_.run(upstream)
    assert info.value.type is ErrorType.AUTHENTICATION
    assert upstream.seen == [OLD, NEW, SPARE]
    # all set aside: they are tried all the same rather than not at all
    upstream.seen.clear()
    upstream.refused = set()
    assert await keys_.run(upstream) == f"answered with {OLD}"


async def test_other_errors_do_not_change_keys(redis: Any) -> None:
    keys_ = ring(redis)
    upstream = Upstream({OLD}, error=ErrorType.SERVICE_UNAVAILABLE)
    with pytest.raises(GatewayError):
        await keys_.run(upstream)
    assert upstream.seen == [OLD]
    assert await redis.exists(keys.provider_key_cooldowns("openai")) == 0


async def test_set_aside_ends_after_the_cooldown(redis: Any) -> None:
    now = [1_000_000.0]
    keys_ = ring(redis, clock=lambda: now[0])
    await keys_.run(Upstream({OLD}))
    assert keys_.is_set_aside(OLD)
    now[0] += 301
    assert not keys_.is_set_aside(OLD)
    assert await keys_.pick() == OLD


async def test_without_redis_the_set_aside_is_local() -> None:
    keys_ = ring(None)
    upstream = Upstream({OLD})
    await keys_.run(upstream)
    upstream.seen.clear()
    await keys_.run(upstream)
    assert upstream.seen == [NEW]


async def test_keys_file_is_reloaded_without_a_restart(tmp_path: Path, redis: Any) -> None:
    path = tmp_path / "keys.env"
    path.write_text(f"OPENAI_API_KEY={OLD}\n")
    now = [0.0]
    s = settings(provider_keys_file=str(path), provider_keys_poll_s=2.0)
    keys_ = ProviderKeys("openai", SecretsSource(s, clock=lambda: now[0]), redis=redis)
    assert keys_.current() == [OLD]
    tmp = tmp_path / "keys.tmp"
    tmp.write_text(f"OPENAI_API_KEY={NEW}\n")
    os.replace(tmp, path)
    assert keys_.current() == [OLD]  # checked at most every poll interval
    now[0] += 2.0
    assert keys_.current() == [NEW]
    assert keys_.first() == NEW


OPENAI_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


async def test_provider_client_retries_with_the_next_key_inside_one_call(redis: Any) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(key)
        if key == OLD:
            return httpx.Response(401, json={"error": {"message": "Incorrect API key", "code": "invalid_api_key"}})
        return httpx.Response(200, json=OPENAI_ANSWER)

    s = settings(openai_base_url="http://upstream.test/v1")
    client = ProviderClient("openai", s, transport=httpx.MockTransport(handler), keys=ring(redis, s))
    try:
        result = await client.complete(ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}]))
    finally:
        await client.aclose()
    assert result.content == "ok"
    assert seen == [OLD, NEW]


async def test_the_client_calls_the_base_url_path_and_keeps_no_cookies() -> None:
    """Cookies a provider sets are not sent back: one tenant's call must not carry another's state."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Set-Cookie": "__cf_bm=tenant-a; Path=/; HttpOnly"}
        return httpx.Response(200, json=OPENAI_ANSWER, headers=headers)

    s = settings(openai_base_url="http://upstream.test/proxy/v1", provider_read_timeout_s=7.0)
    client = ProviderClient(
        "openai", s, transport=httpx.MockTransport(handler), keys=ring(fakeredis.FakeAsyncRedis(), s)
    )
    try:
        for _ in range(2):
            await client.complete(ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}]))
    finally:
        await client.aclose()
    assert [str(r.url) for r in seen] == ["http://upstream.test/proxy/v1/chat/completions"] * 2
    assert "cookie" not in seen[1].headers
    assert seen[1].headers["user-agent"].startswith("python-httpx/")  # the client's default headers still go
    assert seen[1].extensions["timeout"]["read"] == 7.0


async def test_the_client_goes_through_a_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls skip `AsyncClient.send` but still take the transport httpx mounts for an environment proxy."""
    request_lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        request_lines.append(head.split(b"\r\n")[0])
        body = json.dumps(OPENAI_ANSWER).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with server:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        s = settings(openai_base_url="http://upstream.test/v1")
        client = ProviderClient("openai", s, keys=ring(fakeredis.FakeAsyncRedis(), s))
        try:
            result = await client.complete(ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}]))
        finally:
            await client.aclose()
    assert result.content == "ok"
    assert request_lines == [b"POST http://upstream.test/v1/chat/completions HTTP/1.1"]  # the proxy's absolute form
