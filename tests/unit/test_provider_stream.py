"""ProviderClient.open_stream against a small HTTP/1.1 server of the test's own, which sends a canned
stream step by step (each gap is an event the test sets) and reports what the client did to its
connections: how many it opened, and when one was closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

import workers.provider_client as provider_client
from plumbing.aiohttp_transport import StreamingProviderTransport
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from shared.stream_events import TextDelta
from workers.provider_client import ProviderClient
from workers.provider_keys import ProviderKeys

CALL = ProviderCall(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(text: str) -> bytes:
    """One OpenAI content chunk as an SSE event."""
    return (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o-mini",'
        f'"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}\n\n'
    ).encode()


_PREFIX = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt-4o-mini",'
END = (
    _PREFIX
    + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    + _PREFIX
    + b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
    + b"data: [DONE]\n\n"
)

CLOSE = "close"


class Upstream:
    """Answers each request with the next script: a head, then steps; records the Authorization headers."""

    def __init__(self) -> None:
        self.scripts: list[list[Any]] = []
        self.connections = 0
        self.closed = asyncio.Event()  # a connection was closed by the client
        self.auth: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                headers = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.auth.append(headers.get("authorization", ""))
                for step in self.scripts.pop(0):
                    if isinstance(step, asyncio.Event):  # a gap, during which the client may hang up
                        if not await self._gap(step, reader):
                            return
                    elif step == CLOSE:
                        writer.close()
                        return
                    elif isinstance(step, tuple):  # raw bytes: a head, a whole non-streamed answer
                        writer.write(step[0])
                    else:
                        writer.write(b"%x\r\n%s\r\n" % (len(step), step) if step else b"0\r\n\r\n")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()

    @staticmethod
    async def _gap(until: asyncio.Event, reader: asyncio.StreamReader) -> bool:
        """Wait for `until`; False when the client closes the connection first (mid-answer it sends nothing)."""
        gap, hangup = asyncio.ensure_future(until.wait()), asyncio.ensure_future(reader.read(1))
        await asyncio.wait([gap, hangup], return_when=asyncio.FIRST_COMPLETED)
        for task in (gap, hangup):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return not (not hangup.cancelled() and hangup.result() == b"")


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield up, f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()


@pytest.fixture(params=[StreamingProviderTransport, httpx.AsyncHTTPTransport], ids=["aiohttp", "httpx"])
def stream_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    make = request.param
    monkeypatch.setattr(provider_client, "build_stream_transport", lambda url, limits: make(limits=limits))


@contextlib.asynccontextmanager
async def client(base_url: str, keys: str = "sk-test-0000000000", **settings: Any) -> AsyncIterator[ProviderClient]:
    s = Settings(_env_file=None, openai_api_key=keys, openai_base_url=base_url, provider_keys_file=None, **settings)  # type: ignore[call-arg]
    provider = ProviderClient(
        "openai", s, keys=ProviderKeys("openai", SecretsSource(s), redis=fakeredis.FakeAsyncRedis())
    )
    try:
        yield provider
    finally:
        await provider.aclose()


async def read_failing(provider: ProviderClient, batches: list[Any] | None = None) -> GatewayError:
    """The error a stream ends with (the test fails if it ends cleanly); its batches into `batches`."""
    with pytest.raises(GatewayError) as caught:
        async with provider.open_stream(CALL) as stream:
            async for batch in stream:
                (batches if batches is not None else []).append(batch)
    return caught.value


async def within(event: asyncio.Event, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()


@pytest.mark.usefixtures("stream_transport")
async def test_batches_keep_what_arrived_together_and_the_connection_is_reused() -> None:
    gap = asyncio.Event()
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append([(HEAD,), b": ping\n\n" + chunk("Hel") + chunk("lo"), gap, chunk(" you") + END, b""])
        up.scripts.append([(HEAD,), chunk("again") + END, b""])
        batches = []
        async with provider.open_stream(CALL) as stream:
            async for batch in stream:
                batches.append(batch)
                gap.set()
            result = stream.result()
            assert stream.first_delta_ms is not None and stream.first_delta_ms > 0
        assert batches == [[TextDelta("Hel"), TextDelta("lo")], [TextDelta(" you")]]
        assert (result.content, result.finish_reason, result.usage.total_tokens, result.provider_id) == (
            "Hello you",
            "stop",
            7,
            "chatcmpl-1",
        )
        async with provider.open_stream(CALL) as stream:
            assert [d async for batch in stream for d in batch] == [TextDelta("again")]
        assert up.connections == 1  # read to its end, the first stream's connection went back to the pool
        assert not up.closed.is_set()


@pytest.mark.usefixtures("stream_transport")
async def test_leaving_mid_stream_closes_the_upstream_connection() -> None:
    never = asyncio.Event()
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append([(HEAD,), chunk("Hel"), never])
        async with provider.open_stream(CALL) as stream:
            assert await anext(stream) == [TextDelta("Hel")]
        await within(up.closed)
        assert stream.result().content == "Hel"


@pytest.mark.usefixtures("stream_transport")
async def test_aclose_closes_the_upstream_connection() -> None:
    never = asyncio.Event()
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append([(HEAD,), chunk("Hel"), never])
        stream = provider.open_stream(CALL)
        await stream.open()
        assert await anext(stream) == [TextDelta("Hel")]
        await stream.aclose()
        await within(up.closed)


@pytest.mark.usefixtures("stream_transport")
async def test_no_token_within_the_first_byte_timeout() -> None:
    never = asyncio.Event()
    async with upstream() as (up, url), client(url, provider_first_byte_timeout_s=0.3) as provider:
        up.scripts.append([(HEAD,), b": ping\n\n", never])  # headers and a comment are not a token
        err = await read_failing(provider)
        assert (err.type, err.retryable) == (ErrorType.TIMEOUT, True)
        assert "PROVIDER_FIRST_BYTE_TIMEOUT_S" in err.message
        await within(up.closed)


@pytest.mark.usefixtures("stream_transport")
async def test_no_head_within_the_first_byte_timeout() -> None:
    never = asyncio.Event()
    async with upstream() as (up, url), client(url, provider_first_byte_timeout_s=0.3) as provider:
        up.scripts.append([never])
        err = await read_failing(provider)
        assert err.type is ErrorType.TIMEOUT and "PROVIDER_FIRST_BYTE_TIMEOUT_S" in err.message
        await within(up.closed)


@pytest.mark.usefixtures("stream_transport")
async def test_a_stall_after_the_first_token_hits_the_idle_timeout() -> None:
    never = asyncio.Event()
    async with upstream() as (up, url), client(url, provider_stream_idle_timeout_s=0.3) as provider:
        up.scripts.append([(HEAD,), chunk("Hel"), never])
        batches: list[Any] = []
        err = await read_failing(provider, batches)
        assert batches == [[TextDelta("Hel")]]
        assert (err.type, err.retryable) == (ErrorType.TIMEOUT, True)
        assert "PROVIDER_STREAM_IDLE_TIMEOUT_S" in err.message
        await within(up.closed)


@pytest.mark.usefixtures("stream_transport")
@pytest.mark.parametrize("ending", [b"", CLOSE], ids=["body-ends", "connection-drops"])
async def test_a_body_ending_before_the_end_marker_is_a_retryable_error(ending: Any) -> None:
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append([(HEAD,), chunk("Hel"), ending])
        batches: list[Any] = []
        err = await read_failing(provider, batches)
        assert (err.type, err.retryable) == (ErrorType.SERVICE_UNAVAILABLE, True)
        assert "ended before its end marker" in err.message
        assert batches == [[TextDelta("Hel")]]


@pytest.mark.usefixtures("stream_transport")
async def test_an_error_event_mid_stream_is_raised_and_closes_the_connection() -> None:
    never = asyncio.Event()
    error = b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append([(HEAD,), chunk("Hel"), error, never])
        err = await read_failing(provider)
        assert (err.type, err.retryable, err.message) == (
            ErrorType.SERVICE_UNAVAILABLE,
            True,
            "The server had an error",
        )
        await within(up.closed)


def whole(status: str, body: bytes, *headers: str) -> tuple[bytes]:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return ((head + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body,)


@pytest.mark.usefixtures("stream_transport")
async def test_a_non_2xx_answer_is_mapped_with_its_retry_after() -> None:
    async with upstream() as (up, url), client(url) as provider:
        up.scripts.append(
            [whole("429 Too Many Requests", b'{"error": {"message": "Rate limit reached"}}', "retry-after: 7")]
        )
        err = await read_failing(provider)
        assert (err.type, err.retryable, err.retry_after, err.message) == (
            ErrorType.RATE_LIMIT,
            True,
            7.0,
            "Rate limit reached",
        )


@pytest.mark.usefixtures("stream_transport")
async def test_a_refused_key_is_set_aside_and_the_next_one_streams() -> None:
    refused = whole("401 Unauthorized", b'{"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}')
    async with upstream() as (up, url), client(url, keys="sk-test-first0000,sk-test-second000") as provider:
        up.scripts += [[refused], [(HEAD,), chunk("ok") + END, b""]]
        async with provider.open_stream(CALL) as stream:
            assert [d async for batch in stream for d in batch] == [TextDelta("ok")]
        assert up.auth == ["Bearer sk-test-first0000", "Bearer sk-test-second000"]


@pytest.mark.usefixtures("stream_transport")
async def test_connection_refused_is_a_retryable_service_unavailable() -> None:
    async with upstream() as (_, url):
        pass  # the server is closed: nothing listens on its port
    async with client(url) as provider:
        err = await read_failing(provider)
        assert (err.type, err.retryable) == (ErrorType.SERVICE_UNAVAILABLE, True)
